"""Run identity: a run is its resolved config, and its directory records which config trained it.

A run's name says where it lives, not what it is: ``--set``, ``--epochs``, ``--train-limit`` or
an edited grid file give the same name to another run. A run *is* its resolved config (the
grid's settings with every override applied), identified by :func:`digest`, the SHA-256 of
that config's canonical JSON. The run directory records it::

    <run_dir>/config.json     the config, written when the run starts in a directory without
                              training in it, then never rewritten
    <run_dir>/config.sha256   its digest, written atomically right after it
    <run_dir>/result.json     ``config`` and ``config_digest``: what trained the weights beside it

Training in a directory means a backup, a history, elapsed time, a saved model or a finished
(completed or diverged) record: from then on the digest is checked, never rewritten.

- ``run`` (and :func:`training.train.run`) resumes, or re-evaluates, a directory only when its
  digest is the run's; otherwise it refuses (exit 2) naming the keys that differ, old -> new.
- ``grid`` skips a finished run only when its digest is the run's, and refuses the whole grid
  (exit 2, nothing started) when any selected run's directory holds another config's training.
- With ``--restart`` (``run`` and ``grid``) such a directory is moved aside to
  ``<run>.superseded-<UTC time>/`` (never deleted) and the run starts afresh; a directory of
  the same config resumes as without the flag, so the same command still resumes after a kill.
- ``report`` and ``export`` refuse (exit 2) a finished record that contradicts its directory:
  a ``config.json`` that is not the config ``config.sha256`` records, a ``result.json`` whose
  ``config_digest``, ``config`` or lab keys (``learning_rate``, ...) say another config.

**Legacy runs**, recorded before run identity (no ``config.sha256``, no ``config_digest``):
nothing ties their weights to a config (the bug this module ends rewrote the ``config.json``
and ``result.json`` of runs it did not retrain), so no command ever writes a digest for them.
``grid`` leaves a finished legacy run alone when its recorded config is the run's (with a
warning) and refuses it otherwise; ``run`` refuses to resume or re-evaluate a legacy directory
(``--restart`` trains it afresh); ``report`` lists legacy records with a warning; ``export``
refuses to publish one unless ``--allow-legacy``, and its model card then says
``"config_verified": false``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import RunConfig
from training.records import (
    BACKUP_DIR,
    CONFIG_FILE,
    DIGEST_FILE,
    ELAPSED_FILE,
    FINISHED,
    HISTORY_FILE,
    MODEL_FILE,
    RESULT_FILE,
    SUPERSEDED,
    read_result,
    write_json_atomic,
    write_text_atomic,
)

log = logging.getLogger(__name__)

# What a directory can hold about a run, as :func:`inspect` finds it.
FRESH = "fresh"  # no training in it: the run starts there
SAME = "same"  # trained (or partly) under this very config
OTHER = "other"  # trained under another config
INCONSISTENT = "inconsistent"  # its files disagree about the config that trained it
LEGACY = "legacy"  # trained before run identity: no digest recorded

RESTART_HINT = ("; --restart trains it afresh (the old directory is moved aside to "
                f"<run>{SUPERSEDED}<time>/, never deleted)")
# A result record's lab keys, each the copy of a config setting.
_RECORD_KEYS = {"name": "name", "group": "group", "model": "model", "optimizer": "optimizer",
                "learning_rate": "learning_rate", "activation_function": "activation",
                "batch_size": "batch_size", "epochs": "epochs", "seed": "seed"}
_ABSENT = object()


class IdentityError(Exception):
    """A run directory (or record) that holds another config than the one asked for, or whose
    files contradict each other: nothing a retry can fix (exit status 2)."""


def digest(config: Mapping[str, Any]) -> str:
    """SHA-256 of the config's canonical JSON (sorted keys, no spaces): the run's identity."""
    canonical = json.dumps(dict(config), sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def recorded_digest(run_dir: Path) -> str | None:
    path = run_dir / DIGEST_FILE
    return path.read_text().strip() if path.exists() else None


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """'learning_rate: 0.01 -> 0.5, epochs: 5 -> 1': the settings that differ, old -> new."""
    keys = [k for k in dict.fromkeys([*new, *old]) if old.get(k, _ABSENT) != new.get(k, _ABSENT)]
    return ", ".join(f"{k}: {_show(old.get(k, _ABSENT))} -> {_show(new.get(k, _ABSENT))}"
                     for k in keys)


def _show(value: Any) -> str:
    return "(absent)" if value is _ABSENT else json.dumps(value)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _finished(result: Mapping[str, Any] | None) -> bool:
    return result is not None and result.get("status") in FINISHED


def has_training(run_dir: Path) -> bool:
    """Whether anything trained in ``run_dir``: a backup, history, elapsed time, saved model or
    finished record (a ``failed`` record of a run that never trained does not count)."""
    state = (BACKUP_DIR, HISTORY_FILE, ELAPSED_FILE, MODEL_FILE)
    return any((run_dir / name).exists() for name in state) or _finished(read_result(run_dir))


# --- What a directory holds -----------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """What :func:`inspect` found in a run directory for a config."""

    kind: str  # FRESH, SAME, OTHER, INCONSISTENT or LEGACY
    run_dir: Path
    detail: str = ""  # the settings that differ, or what contradicts what
    finished: bool = False  # a completed or diverged record is there

    @property
    def resumable(self) -> bool:
        """Whether the run may train (start, resume or re-evaluate) in the directory as it is."""
        return self.kind in (FRESH, SAME)

    @property
    def skippable(self) -> bool:
        """Whether the grid counts the run as done: finished under this config, or a finished
        legacy record whose recorded config is this one."""
        legacy_same = self.kind == LEGACY and not self.detail
        return self.finished and (self.kind == SAME or legacy_same)

    def message(self) -> str:
        if self.kind == OTHER:
            return f"{self.run_dir}: trained under another config ({self.detail})"
        if self.kind == INCONSISTENT:
            return (f"{self.run_dir}: its files disagree about the config that trained it: "
                    f"{self.detail}")
        if self.kind == LEGACY:
            differs = f"; its recorded config differs ({self.detail})" if self.detail else ""
            return (f"{self.run_dir}: trained before runs recorded their config digest "
                    f"({DIGEST_FILE}), so what trained it cannot be checked{differs}")
        return f"{self.run_dir}: {self.kind}"


def inspect(run_dir: Path, config: RunConfig) -> Verdict:
    """What ``run_dir`` holds with respect to ``config`` (see the module's docstring)."""
    if not has_training(run_dir):
        return Verdict(FRESH, run_dir)
    result = read_result(run_dir)
    finished = _finished(result)
    recorded = recorded_digest(run_dir)
    if recorded is None:
        return _legacy(run_dir, config, result)
    problem = _contradiction(run_dir, recorded, result if finished else None)
    if problem:
        return Verdict(INCONSISTENT, run_dir, problem, finished)
    wanted = config.to_dict()
    if recorded == digest(wanted):
        return Verdict(SAME, run_dir, finished=finished)
    detail = differences(_read_json(run_dir / CONFIG_FILE), wanted)
    return Verdict(OTHER, run_dir, detail or f"digest {recorded} -> {digest(wanted)}", finished)


def _legacy(run_dir: Path, config: RunConfig, result: dict[str, Any] | None) -> Verdict:
    """A directory without a digest: its recorded config (the finished record's, else
    config.json) compared with ``config``, settings added since taken at their defaults."""
    finished = _finished(result)
    recorded = (result or {}).get("config") if finished else None
    recorded = recorded or _read_json(run_dir / CONFIG_FILE)
    if not isinstance(recorded, dict):
        return Verdict(LEGACY, run_dir, "no config recorded", finished)
    try:
        recorded = RunConfig.from_dict(recorded).to_dict()
    except (TypeError, ValueError):
        pass  # a setting since removed or renamed: it shows among the differences
    return Verdict(LEGACY, run_dir, differences(recorded, config.to_dict()), finished)


def _contradiction(run_dir: Path, recorded: str, result: Mapping[str, Any] | None) -> str:
    """What in ``run_dir`` contradicts its digest ``recorded``; '' when nothing does. ``result``:
    its finished record, if any (a failed record trained nothing and is not checked)."""
    config = _read_json(run_dir / CONFIG_FILE)
    if not isinstance(config, dict):
        return f"no {CONFIG_FILE} beside its {DIGEST_FILE}"
    if digest(config) != recorded:
        return (f"{CONFIG_FILE} is not the config its {DIGEST_FILE} records (edited after the "
                f"run started?)")
    return _record_contradiction(result, config, recorded) if result is not None else ""


def _record_contradiction(result: Mapping[str, Any], config: Mapping[str, Any],
                          recorded: str) -> str:
    """What in a finished record says another config than ``config`` (digest ``recorded``)."""
    if result.get("config_digest") != recorded:
        return (f"{RESULT_FILE} was written for another config (its config_digest "
                f"{result.get('config_digest')}, the directory's {recorded})")
    own = result.get("config")
    if not isinstance(own, dict) or digest(own) != recorded:
        return (f"{RESULT_FILE}'s config is not the one that trained it "
                f"({differences(config, own if isinstance(own, dict) else {})})")
    edited = [f"{key} {_show(result[key])} where {CONFIG_FILE} has {_show(config.get(setting))}"
              for key, setting in _RECORD_KEYS.items()
              if key in result and result[key] != config.get(setting, _ABSENT)]
    return f"{RESULT_FILE} says " + ", ".join(edited) if edited else ""


# --- What the commands do with it ---------------------------------------------------------------
def claim(run_dir: Path, config: RunConfig) -> None:
    """Make ``run_dir`` the directory of ``config`` before anything trains there: a directory
    without training gets config.json and its digest; one trained under ``config`` is left as
    it is; anything else raises :class:`IdentityError`."""
    verdict = inspect(run_dir, config)
    if verdict.kind == FRESH:
        data = config.to_dict()
        write_json_atomic(run_dir / CONFIG_FILE, data)
        write_text_atomic(run_dir / DIGEST_FILE, digest(data) + "\n")
    elif not verdict.resumable:
        raise IdentityError(verdict.message())


def supersede(run_dir: Path) -> Path:
    """Move ``run_dir`` aside to ``<run>.superseded-<UTC time>`` (never deleted); the new path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = run_dir.with_name(f"{run_dir.name}{SUPERSEDED}{stamp}")
    copy = 1
    while target.exists():
        copy += 1
        target = run_dir.with_name(f"{run_dir.name}{SUPERSEDED}{stamp}-{copy}")
    os.rename(run_dir, target)
    log.warning("%s moved aside to %s: the run starts afresh", run_dir, target.name)
    return target


def prepare(run_dir: Path, config: RunConfig, *, restart: bool) -> None:
    """``run``'s check before training: the directory resumable for ``config``, else moved aside
    when ``restart``, else :class:`IdentityError` naming what differs and the way out."""
    verdict = inspect(run_dir, config)
    if verdict.resumable:
        return
    if not restart:
        raise IdentityError(verdict.message() + RESTART_HINT)
    supersede(run_dir)


# --- Records read by report and export ----------------------------------------------------------
def verify_record(run_dir: Path, result: Mapping[str, Any]) -> bool:
    """Whether a finished record is tied to its config (True) or legacy (False, no digest
    anywhere); :class:`IdentityError` when the record and its directory contradict each other."""
    recorded = recorded_digest(run_dir)
    if recorded is None and "config_digest" not in result:
        return False
    problem = (f"{DIGEST_FILE} is missing" if recorded is None
               else _contradiction(run_dir, recorded, result))
    if problem:
        raise IdentityError(f"{run_dir}: its record does not describe the config that trained "
                            f"it: {problem}")
    return True


def check_records(grid_dir: Path, results: Sequence[Mapping[str, Any]]) -> list[str]:
    """The names of the legacy records among ``results`` (their finished ones checked);
    :class:`IdentityError` naming every record that contradicts its directory."""
    legacy, problems = [], []
    for result in results:
        if not _finished(result):
            continue
        try:
            if not verify_record(grid_dir / result["name"], result):
                legacy.append(result["name"])
        except IdentityError as exc:
            problems.append(str(exc))
    if problems:
        raise IdentityError("\n".join(problems) + "\nthese records do not describe the weights "
                            "beside them: restore their files, or retrain the runs (run or grid "
                            "with --restart)")
    return legacy
