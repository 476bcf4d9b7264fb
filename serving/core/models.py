"""The models one worker serves, by name: each its own repository, batching queue and labels.

A server serves the models of its model config (``--model_config_file``, or the single-model
flags as a one-model config). :class:`ServedModels` maps each name to a :class:`ServedModel`:
its :class:`~serving.core.repository.ModelRepository` (versions, policy, labels, poller) and its
own :class:`~serving.core.batching.Batcher` (so one model's queue never holds another's
requests).

:meth:`ServedModels.apply` moves a worker to a new set of models (what the control plane hands
it, :mod:`serving.core.control`): a new model is loaded (its first scan done) *before* it joins
the served map; a model whose base path changed gets a fresh repository, loaded before it
replaces the old one; a changed version policy or labels are applied to the running repository;
a removed (or unloaded) model leaves the map. The map is replaced by one reference assignment
and never mutated, so a request that already holds a model finishes on it (its ONNX Runtime
session lives as long as a request holds it) while new requests see the new set. Requests to the
other models never wait for any of this.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from contract.errors import NotFound
from contract.types import ModelEntry
from serving.core.batching import Batcher
from serving.core.repository import ModelRepository

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """One served model: its configuration, repository and batching queue (None: unbatched)."""

    entry: ModelEntry
    repository: ModelRepository
    batcher: Batcher | None = None

    @property
    def name(self) -> str:
        return self.entry.name


RepositoryFactory = Callable[[ModelEntry], ModelRepository]
BatcherFactory = Callable[[], Batcher | None]


class ServedModels:
    """The served models by name; readers never lock, :meth:`apply` serializes the changes."""

    def __init__(
        self,
        make_repository: RepositoryFactory | None = None,
        make_batcher: BatcherFactory = lambda: None,
    ) -> None:
        self._make_repository = make_repository
        self._make_batcher = make_batcher
        self._served: MappingProxyType[str, ServedModel] = MappingProxyType({})
        self._unloaded: tuple[ModelEntry, ...] = ()  # configured but unloaded (V2 unload)

    @classmethod
    def of(cls, repository: ModelRepository, batcher: Batcher | None = None) -> ServedModels:
        """One model already built (and started) by the caller; ``apply`` cannot add others."""
        models = cls()
        entry = ModelEntry(repository.model_name, str(repository.base_path), repository.policy,
                           repository.labels)
        models._served = MappingProxyType({entry.name: ServedModel(entry, repository, batcher)})
        return models

    # --- readers (request path) ----------------------------------------------------------------
    def get(self, name: str) -> ServedModel:
        """The model a request names; NOT_FOUND naming the served ones otherwise."""
        served = self._served.get(name)
        if served is None:
            raise NotFound(self._unknown(name))
        return served

    def _unknown(self, name: str) -> str:
        served = ", ".join(repr(n) for n in sorted(self._served)) or "none"
        if any(entry.name == name for entry in self._unloaded):
            return f"model {name!r} is unloaded (served models: {served})"
        return f"model {name!r} is not served here (served models: {served})"

    def names(self) -> list[str]:
        return sorted(self._served)

    def values(self) -> list[ServedModel]:
        return [self._served[name] for name in sorted(self._served)]

    @property
    def unloaded(self) -> tuple[ModelEntry, ...]:
        return self._unloaded

    def __contains__(self, name: object) -> bool:
        return name in self._served

    def ready(self, strict: bool = True) -> bool:
        """True when every served model has a version AVAILABLE (``strict``) or any one does."""
        served = [model.repository.ready for model in self._served.values()]
        return bool(served) and (all(served) if strict else any(served))

    # --- changes (the control plane's thread) ---------------------------------------------------
    def apply(self, entries: Sequence[ModelEntry], unloaded: Iterable[str] = ()) -> None:
        """Serve ``entries`` less the ``unloaded`` names: load what is new, then swap, then stop
        what left."""
        if self._make_repository is None:
            raise RuntimeError("these models were built by their caller; they cannot change")
        off = set(unloaded)
        wanted = [entry for entry in entries if entry.name not in off]
        before = self._served
        after = {entry.name: self._updated(before.get(entry.name), entry) for entry in wanted}
        self._served = MappingProxyType(after)
        self._unloaded = tuple(entry for entry in entries if entry.name in off)
        self._retire(before, after)

    def _updated(self, current: ServedModel | None, entry: ModelEntry) -> ServedModel:
        """``entry``'s model: the current one (reconfigured if need be) or a new one, loaded."""
        if current is not None and current.entry.base_path == entry.base_path:
            if current.entry != entry:
                current.repository.reconfigure(entry.policy, dict(entry.labels))
                logger.info("model %s reconfigured: policy %s, labels %s", entry.name,
                            entry.policy, dict(entry.labels) or "none")
            return ServedModel(entry, current.repository, current.batcher)
        assert self._make_repository is not None
        repository = self._make_repository(entry)
        repository.start()  # its first scan: loaded before anyone can address it
        logger.info("model %s added from %s (policy %s)", entry.name, entry.base_path, entry.policy)
        return ServedModel(entry, repository, self._make_batcher())

    @staticmethod
    def _retire(before: Mapping[str, ServedModel], after: Mapping[str, ServedModel]) -> None:
        """Stop the pollers of the repositories no longer served. Requests holding one of their
        versions still finish on it (nothing here closes a session or a queue)."""
        for name, model in before.items():
            replacement = after.get(name)
            if replacement is None or replacement.repository is not model.repository:
                model.repository.stop()
                kept = [] if replacement is None else [
                    row.version for row in replacement.repository.statuses() if row.available]
                model.repository.retire(kept)
                logger.info("model %s no longer served from %s", name, model.entry.base_path)

    def stop(self) -> None:
        """Stop every poller (the worker is exiting)."""
        for model in self._served.values():
            model.repository.stop()
