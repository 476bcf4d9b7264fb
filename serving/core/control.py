"""The control plane: which models every worker serves, and runtime changes to them.

A server is several processes (REST and gRPC workers, each with its own models), and a change
may reach any one of them (a ``HandleReloadConfigRequest`` lands on one gRPC worker, a V2 load on
one REST worker) or none (the supervisor re-reading ``--model_config_file``). They converge
through one small store the supervisor creates for the server's lifetime (``SERVING_STATE_DIR``):

- ``models.json``: the desired models, with a generation number. It is written only under an
  exclusive ``flock`` of ``models.lock`` (read, change, write a temporary file, rename), so two
  changes arriving at two workers at once are applied one after the other, never lost.
- ``applied/<worker>.json``: the generation each worker has applied (and its pid).

Every worker's :class:`ModelControl` reads ``models.json`` every ``poll_seconds`` and applies
a newer generation to its :class:`ServedModels` in its own thread; a worker that starts (or is
respawned) applies the current one before it serves. The worker that took a runtime change
writes the new generation, applies it itself, then waits until every live worker has reported
it (dead workers' reports are ignored) before it answers, so a client that got its answer can
address the change on any connection.

The runtime changes (reload, load, unload) let anyone who reaches a port unload every model, so
they are refused (PERMISSION_DENIED) unless ``--model_control_mode explicit``; reading the
index is always allowed. The config file is the operator's: the supervisor polls it whatever the
mode, and a change of its contents replaces the models (a runtime change holds until then).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contract.errors import DeadlineExceeded, FailedPrecondition, NotFound, PermissionDenied
from contract.types import ModelEntry, check_unique_names
from serving.settings import CONTROL_EXPLICIT, CONTROL_NONE

if TYPE_CHECKING:  # the supervisor imports this module and must not load ONNX Runtime
    from serving.core.models import ServedModels

logger = logging.getLogger(__name__)

STATE_FILE = "models.json"
LOCK_FILE = "models.lock"
APPLIED_DIR = "applied"


@dataclass(frozen=True)
class DesiredModels:
    """What every worker should serve: the configured models, less the unloaded names."""

    generation: int
    models: tuple[ModelEntry, ...]
    unloaded: frozenset[str] = field(default_factory=frozenset)
    source: str = ""  # what made this generation (for the log)

    def names(self) -> list[str]:
        return [entry.name for entry in self.models]

    def as_dict(self) -> dict[str, Any]:
        return {"generation": self.generation, "models": [m.as_dict() for m in self.models],
                "unloaded": sorted(self.unloaded), "source": self.source}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DesiredModels:
        return cls(int(data["generation"]), tuple(ModelEntry.from_dict(m) for m in data["models"]),
                   frozenset(data["unloaded"]), data.get("source", ""))


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as out:
        json.dump(data, out)
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


Change = Callable[[DesiredModels], tuple[Sequence[ModelEntry], frozenset[str], str]]


class ModelStore:
    """The server's desired models and each worker's applied generation, in one directory."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.state_path = self.directory / STATE_FILE
        self.applied_dir = self.directory / APPLIED_DIR

    # --- desired ------------------------------------------------------------------------------
    def read(self) -> DesiredModels:
        return DesiredModels.from_dict(json.loads(self.state_path.read_text()))

    @contextmanager
    def _locked(self):
        with open(self.directory / LOCK_FILE, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def initialize(self, models: Sequence[ModelEntry], source: str) -> DesiredModels:
        """The first generation (the supervisor, before any worker starts)."""
        self.applied_dir.mkdir(parents=True, exist_ok=True)
        check_unique_names(models)
        state = DesiredModels(1, tuple(models), frozenset(), source)
        with self._locked():
            _write_json_atomic(self.state_path, state.as_dict())
        return state

    def update(self, change: Change) -> DesiredModels:
        """Apply ``change`` to the current desired models as the next generation, atomically
        with respect to every other process's updates. ``change`` raises to refuse."""
        with self._locked():
            current = self.read()
            models, unloaded, source = change(current)
            check_unique_names(models)
            names = {entry.name for entry in models}
            state = DesiredModels(current.generation + 1, tuple(models),
                                  frozenset(unloaded) & names, source)
            _write_json_atomic(self.state_path, state.as_dict())
        logger.info("models generation %d (%s): %s%s", state.generation, source,
                    ", ".join(state.names()) or "none",
                    f"; unloaded {sorted(state.unloaded)}" if state.unloaded else "")
        return state

    # --- applied ------------------------------------------------------------------------------
    def report(self, worker: str, generation: int) -> None:
        _write_json_atomic(self.applied_dir / f"{worker}.json",
                           {"generation": generation, "pid": os.getpid()})

    def lagging(self, generation: int) -> list[str]:
        """The live workers that have not applied ``generation`` yet."""
        behind = []
        for path in sorted(self.applied_dir.glob("*.json")):
            try:
                report = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # being replaced, or gone: read again next time
            if report["generation"] < generation and _alive(int(report["pid"])):
                behind.append(path.stem)
        return behind

    def wait_applied(self, generation: int, timeout: float) -> None:
        """Until every live worker has applied ``generation``; DEADLINE_EXCEEDED naming the
        laggards after ``timeout`` seconds (the change stays: they apply it when they can)."""
        deadline = time.monotonic() + timeout
        while True:
            behind = self.lagging(generation)
            if not behind:
                return
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(
                    f"models generation {generation} is not yet applied by workers "
                    f"{', '.join(behind)} after {timeout:g} s; they apply it when they can"
                )
            time.sleep(0.02)


class ModelControl:
    """One worker's end of the store: keeps its served models at the desired generation, and
    takes the runtime changes (reload, load, unload) when model control is explicit."""

    def __init__(
        self,
        store: ModelStore,
        models: ServedModels,
        worker: str,
        *,
        mode: str = CONTROL_NONE,
        poll_seconds: float = 0.2,
        apply_timeout: float = 60.0,
    ) -> None:
        self.store = store
        self.models = models
        self.worker = worker
        self.mode = mode
        self.poll_seconds = poll_seconds
        self.apply_timeout = apply_timeout
        self.generation = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- following the desired models -----------------------------------------------------------
    def start(self) -> None:
        """Apply the current generation now (before the worker serves), then follow changes."""
        self.sync()
        self._thread = threading.Thread(target=self._watch, name="model-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        # The generation decides, not the file's mtime or inode: two writes within one clock
        # tick, with a reused inode, would look unchanged. The read is a few hundred bytes.
        failing = ""  # the last failure logged: a persistent one is logged once, retried each poll
        while not self._stop.wait(self.poll_seconds):
            try:
                self.sync()
                failing = ""
            except Exception as exc:  # a bad read must not end the watch; the next poll retries
                if repr(exc) != failing:
                    logger.exception("applying the desired models failed (retried every %g s)",
                                     self.poll_seconds)
                failing = repr(exc)

    def sync(self) -> DesiredModels:
        """Apply the store's generation if it is newer than this worker's."""
        return self._apply(self.store.read())

    def _apply(self, state: DesiredModels) -> DesiredModels:
        with self._lock:
            if state.generation > self.generation:
                self.models.apply(state.models, state.unloaded)
                self.generation = state.generation
                self.store.report(self.worker, state.generation)
                logger.info("worker %s applied models generation %d (%s): serving %s",
                            self.worker, state.generation, state.source,
                            ", ".join(self.models.names()) or "none")
        return state

    # --- runtime changes ------------------------------------------------------------------------
    def _allowed(self, what: str) -> None:
        if self.mode != CONTROL_EXPLICIT:
            raise PermissionDenied(
                f"{what} is refused: model control is off (start the server with "
                "--model_control_mode explicit to allow runtime model changes)"
            )

    def _converge(self, state: DesiredModels, timeout: float | None) -> None:
        """This worker first, then every other live worker, within the call's time."""
        self._apply(state)
        self.store.wait_applied(state.generation, self.apply_timeout if timeout is None
                                else min(timeout, self.apply_timeout))

    def _not_serving(self, names: Sequence[str]) -> list[str]:
        """``name: why`` for each of ``names`` served here without an AVAILABLE version."""
        problems = []
        for name in names:
            if name not in self.models:
                continue
            repository = self.models.get(name).repository
            if not repository.ready:
                errors = [s.error_message for s in repository.statuses() if s.error_message]
                why = errors[-1] if errors else f"no version under {repository.base_path}"
                problems.append(f"{name}: {why}")
        return problems

    def reload(self, models: Sequence[ModelEntry], timeout: float | None = None) -> None:
        """Serve exactly ``models`` (TF Serving's HandleReloadConfigRequest); FAILED_PRECONDITION
        naming the models that then have no version to serve (they stay configured)."""
        self._allowed("reloading the model config")
        check_unique_names(models)
        state = self.store.update(lambda current: (models, current.unloaded, "reload request"))
        self._converge(state, timeout)
        problems = self._not_serving([entry.name for entry in models])
        if problems:
            raise FailedPrecondition("config applied, but no version serves for " + "; ".join(problems))

    def load(self, name: str, timeout: float | None = None) -> None:
        """Serve a configured model again (V2 repository load); a served one is left as it is."""
        self._allowed(f"loading model {name!r}")

        def change(current: DesiredModels) -> tuple[Sequence[ModelEntry], frozenset[str], str]:
            if name not in current.names():
                raise NotFound(f"model {name!r} is not in the model config (configured: "
                               f"{', '.join(current.names()) or 'none'}); add it with a config reload")
            return current.models, current.unloaded - {name}, f"load {name}"

        self._converge(self.store.update(change), timeout)
        problems = self._not_serving([name])
        if problems:
            raise FailedPrecondition(f"model loaded, but no version serves: {problems[0]}")

    def unload(self, name: str, timeout: float | None = None) -> None:
        """Stop serving a configured model (V2 repository unload); it stays in the index."""
        self._allowed(f"unloading model {name!r}")

        def change(current: DesiredModels) -> tuple[Sequence[ModelEntry], frozenset[str], str]:
            if name not in current.names():
                raise NotFound(f"model {name!r} is not in the model config (configured: "
                               f"{', '.join(current.names()) or 'none'})")
            return current.models, current.unloaded | {name}, f"unload {name}"

        self._converge(self.store.update(change), timeout)
