"""The model repository: which versions exist on disk, which are loaded, and their status.

Scans ``--model_base_path`` for integer version directories every
``--file_system_poll_wait_seconds``. A version is loaded fully (session created, contract
checked, warm-up inference run) *before* it joins the served set; the set is replaced by one
reference assignment, so a request that already holds a version finishes on it, and only after
that swap does status say AVAILABLE (or END for the versions it dropped) and the ``on_loaded``
callback hear of it: a version reported AVAILABLE always answers.

A failed load is retried as TF Serving retries it: up to ``--max_num_load_retries`` more
attempts with the same files, at least ``--load_retry_interval_micros`` apart. The attempts are
made by later scans, never by waiting inside one, so a failing version delays neither the other
versions nor the server's start. The files are fingerprinted *before* each attempt: a
``model.onnx`` still being written in place (``kubectl cp``, ``rsync --inplace``) fails against
its partial state, and once the file has changed it is tried again at the next scan, with a
fresh count. A version that has used up its attempts stays failed until its files change. While
it fails it is reported END with its last error, does not displace the versions already
serving, and the policy picks among the others in the same scan (``latest:1`` with version 3
corrupt serves 2 from the first scan on), so a worker that has finished ``start()`` serves a
version whenever any version on disk can load.

Each version's model card (``model-card.json`` beside ``model.onnx``) is read when it loads: its
``baseline`` (``contract.quality.baseline_of``) becomes the ``serving_model_baseline`` series
while the version serves (``metrics.set_baseline``). A card without one only costs a log line.

Version policy (``--model_version_policy``): ``latest:N`` (default ``latest:1``), ``all``, or
``specific:V1,V2``. Optional labels (``--version_labels stable=1,canary=2``) name versions.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from contract import MODEL_CARD_FILENAME, ONNX_FILENAME, model_versions, version_path
from contract.errors import Code, NotFound, ServingError, Unavailable
from contract.quality import STATISTICS
from contract.types import AVAILABLE, END, LOADING, VersionStatus
from serving.core.runtime import LoadedModel
from serving.observability import metrics
from serving.settings import Settings

logger = logging.getLogger(__name__)


def _fingerprint(directory: Path) -> tuple:
    """Changes when the version's files change (a write, a rename over it, a touch)."""
    try:
        stat = (directory / ONNX_FILENAME).stat()
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    except OSError:
        try:
            return ("missing", directory.stat().st_mtime_ns)
        except OSError:
            return ("gone",)


def card_baseline(directory: Path) -> dict[tuple[str, str], float] | None:
    """The baseline series of a version's model card, ``{(statistic, moment): value}``: each
    input statistic's mean and std, and ``("low_confidence_share", "value")``; None, with a log
    line, when the card or its baseline is missing or malformed (the version serves regardless)."""
    path = directory / MODEL_CARD_FILENAME
    try:
        baseline = json.loads(path.read_text()).get("baseline")
        if baseline is None:
            logger.info("%s has no baseline: no serving_model_baseline series", path)
            return None
        values = {
            (name, moment): float(baseline["input"][name][moment])
            for name in STATISTICS
            for moment in ("mean", "std")
        }
        values["low_confidence_share", "value"] = float(baseline["confidence"]["low_share"])
    except FileNotFoundError:
        logger.info("no %s: no serving_model_baseline series", path)
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.warning("unreadable baseline in %s (%s: %s): no serving_model_baseline series",
                       path, type(exc).__name__, exc)
        return None
    return values


@dataclass(frozen=True)
class _Failures:
    """The failed attempts at loading one version with the same files."""

    fingerprint: tuple  # of the files as they were before the attempts
    count: int
    retry_at: float  # clock time from which the next attempt may start; inf once given up


class ModelRepository:
    """Loads and serves the versions of one model; thread-safe for readers."""

    def __init__(
        self,
        model_name: str,
        base_path: str | Path,
        *,
        policy: str = Settings.model_version_policy,
        labels: dict[str, int] | None = None,
        poll_wait_seconds: float = Settings.file_system_poll_wait_seconds,
        warm_up: bool = Settings.enable_model_warmup,
        intra_op_threads: int = Settings.tensorflow_intra_op_parallelism,
        max_load_retries: int = Settings.max_num_load_retries,
        load_retry_interval_seconds: float = Settings.load_retry_interval_micros / 1e6,
        on_loaded: Callable[[int, bool], None] | None = None,
        on_load_failed: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model_name = model_name
        self.base_path = Path(base_path)
        self.policy = policy
        self.labels = dict(labels or {})
        self.poll_wait_seconds = poll_wait_seconds
        self.warm_up = warm_up
        self.intra_op_threads = intra_op_threads
        self.max_load_retries = max(0, max_load_retries)
        # TF Serving's negative interval means "do not wait": then every scan retries.
        self.load_retry_interval_seconds = max(0.0, load_retry_interval_seconds)
        self._on_loaded = on_loaded or (lambda version, loaded: None)
        self._on_load_failed = on_load_failed or (lambda version: None)
        self._clock = clock
        # Readers take this mapping without a lock: it is only ever replaced, never mutated.
        self._served: MappingProxyType[int, LoadedModel] = MappingProxyType({})
        self._status: dict[int, VersionStatus] = {}
        self._failures: dict[int, _Failures] = {}
        self._baselines: dict[int, dict[tuple[str, str], float] | None] = {}  # loaded, not yet published
        self._scan_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- readers (request path) ----------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True while at least one version is AVAILABLE."""
        return bool(self._served)

    def get(self, version: int | None = None, label: str | None = None) -> LoadedModel:
        """The version a request asked for (highest served by default)."""
        served = self._served
        if label is not None:
            if label not in self.labels:
                raise NotFound(f"model {self.model_name!r} has no version label {label!r}")
            version = self.labels[label]
        if version is None:
            if not served:
                raise Unavailable(f"no version of model {self.model_name!r} is available yet")
            return served[max(served)]
        model = served.get(version)
        if model is not None:
            return model
        status = self._status.get(version)
        if status is not None and status.state == LOADING:
            raise Unavailable(f"version {version} of model {self.model_name!r} is still loading")
        raise NotFound(
            f"model {self.model_name!r} version {version} is not served "
            f"(available: {sorted(served) or 'none'})"
        )

    def statuses(self, version: int | None = None) -> list[VersionStatus]:
        """Status rows, ascending by version; NotFound for a version never seen."""
        rows = dict(self._status)
        if version is not None:
            if version not in rows:
                raise NotFound(f"model {self.model_name!r} has no version {version}")
            return [rows[version]]
        return [rows[v] for v in sorted(rows)]

    # --- changes of configuration -----------------------------------------------------------------
    def reconfigure(self, policy: str, labels: dict[str, int]) -> None:
        """A new version policy and labels (the model config changed): a scan applies them now."""
        with self._scan_lock:
            self.policy = policy
            self.labels = dict(labels)  # replaced, never mutated: readers take it without a lock
        self.poll_once()

    def retire(self, kept: Collection[int] = ()) -> None:
        """The model is no longer served from here: its versions are reported END (status, gauges,
        log), but for ``kept``, those its replacement (the same name, another base path) serves
        already. The served set stays, so a request already holding this repository finishes."""
        with self._scan_lock:
            served = self._served
            self._publish(served, {v: model for v, model in served.items() if v in kept})

    # --- the poller ----------------------------------------------------------------------------
    def start(self) -> None:
        """Scan once now (so a ready server has loaded its model), then poll in the background."""
        self.poll_once()
        if self.poll_wait_seconds > 0:
            self._thread = threading.Thread(target=self._run, name="repository-poller", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_wait_seconds):
            try:
                self.poll_once()
            except Exception:  # a bad scan must not kill the poller; the next one retries
                logger.exception("repository scan failed")

    def _waiting(self, version: int, now: float) -> bool:
        """True while a failed version waits for its next attempt and its files are unchanged."""
        failures = self._failures.get(version)
        return (
            failures is not None
            and now < failures.retry_at
            and failures.fingerprint == _fingerprint(version_path(self.base_path, version))
        )

    def _wanted(self, on_disk: list[int], failed_now: set[int]) -> list[int]:
        # A version failing with its current files is no candidate until its next attempt is
        # due (nor again in the scan that saw it fail): the ones before it stay.
        now = self._clock()
        candidates = [v for v in on_disk if v not in failed_now and not self._waiting(v, now)]
        if self.policy == "all":
            return candidates
        if self.policy.startswith("specific:"):
            chosen = {int(v) for v in self.policy.split(":", 1)[1].split(",")}
            return [v for v in candidates if v in chosen]
        count = int(self.policy.split(":", 1)[1])
        return candidates[-count:]

    def poll_once(self) -> None:
        """One scan: load what the policy wants and is new, swap, then publish the change."""
        with self._scan_lock:
            on_disk = model_versions(self.base_path)
            before = self._served
            served = dict(before)
            wanted = self._load_wanted(on_disk, served)
            self._unload_unwanted(wanted, served)
            self._served = MappingProxyType(served)
            self._publish(before, served)
            self._forget_gone(on_disk, served)

    def _load_wanted(self, on_disk: list[int], served: dict[int, LoadedModel]) -> list[int]:
        """Load into ``served`` every version the policy wants; the versions it wants then.

        A version that fails leaves the candidates, so the policy picks again in this same scan:
        with 3 corrupt, latest:1 falls back to 2 now, not one poll period later (a fresh or
        respawned worker would otherwise start with nothing to serve).
        """
        failed_now: set[int] = set()
        while True:
            wanted = self._wanted(on_disk, failed_now)
            loaded = {v: self._load(v) for v in wanted if v not in served}
            served.update({v: model for v, model in loaded.items() if model is not None})
            failed = {v for v, model in loaded.items() if model is None}
            if not failed:
                return wanted
            failed_now |= failed

    @staticmethod
    def _unload_unwanted(wanted: list[int], served: dict[int, LoadedModel]) -> None:
        """Drop from ``served`` the versions neither wanted nor needed as the last one standing."""
        keep = set(wanted) & set(served)
        if not keep and served:
            keep = {max(served)}
        for version in set(served) - keep:
            del served[version]

    def _publish(self, before: Mapping[int, LoadedModel], after: Mapping[int, LoadedModel]) -> None:
        """Status and callbacks for what the swap changed, once readers see the new set."""
        for version in sorted(set(after) - set(before)):
            self._status[version] = VersionStatus(version, AVAILABLE)
            baseline = self._baselines.pop(version, None)
            if baseline is not None:
                metrics.set_baseline(self.model_name, version, baseline)
            self._on_loaded(version, True)
        for version in sorted(set(before) - set(after)):
            self._status[version] = VersionStatus(version, END)
            metrics.set_baseline(self.model_name, version, None)
            self._on_loaded(version, False)
            logger.info("unloaded %s version %d", self.model_name, version)

    def _forget_gone(self, on_disk: list[int], served: dict[int, LoadedModel]) -> None:
        """Forget the versions whose directories are gone and which no longer serve."""
        for version in list(self._status):
            if version not in on_disk and version not in served:
                del self._status[version]
                self._failures.pop(version, None)

    def _load(self, version: int) -> LoadedModel | None:
        """The loaded version, or None (status END, the failure counted) when it fails."""
        directory = version_path(self.base_path, version)
        # Before reading: if the file changes during the attempt, the finished file is new files.
        fingerprint = _fingerprint(directory)
        self._status[version] = VersionStatus(version, LOADING)
        try:
            model = LoadedModel(version, directory, self.intra_op_threads)
            if self.warm_up:
                model.warm_up()
        except ServingError as exc:  # the version cannot serve: the runtime says why
            return self._failed_load(version, fingerprint, exc.code, exc.message)
        except Exception as exc:  # e.g. ORT failing at warm-up on a graph it accepted
            return self._failed_load(version, fingerprint, Code.INTERNAL, f"{type(exc).__name__}: {exc}")
        self._failures.pop(version, None)
        self._baselines[version] = card_baseline(directory)
        logger.info("loaded %s version %d from %s", self.model_name, version, directory)
        return model

    def _failed_load(self, version: int, fingerprint: tuple, code: str, message: str) -> None:
        previous = self._failures.get(version)
        count = previous.count + 1 if previous and previous.fingerprint == fingerprint else 1
        attempts = 1 + self.max_load_retries
        if count < attempts:
            retry_at = self._clock() + self.load_retry_interval_seconds
            outcome = (
                f"attempt {count} of {attempts}; next after {self.load_retry_interval_seconds:g} s"
                " or once its files change"
            )
        else:
            retry_at = math.inf
            outcome = f"failed {count} attempts; retried once its files change"
        self._failures[version] = _Failures(fingerprint, count, retry_at)
        self._status[version] = VersionStatus(version, END, code, f"{message} ({outcome})")
        self._on_load_failed(version)
        log = logger.warning if count < attempts else logger.error
        log("failed to load %s version %d (%s): %s", self.model_name, version, outcome, message)
        return None
