"""The data plane: all the business logic of predict, metadata and status, for every protocol,
routed by model name over the served models (:class:`serving.core.models.ServedModels`).

The REST and gRPC adapters decode their request into plain values (numpy arrays, version
numbers, names), call one method here, and encode the result; nothing here knows a wire format.
Results are numpy arrays and the foundation's protocol-neutral types (``contract.types``:
``ModelMetadata``, ``VersionStatus``). Every client mistake is raised as a
``contract.errors.ServingError`` with its gRPC code; each adapter translates it in one place.

It also says what it serves: each request's model and version (the labels of the request
metrics, ``metrics.request_addressed``), and after each successful predict it hands the images,
probabilities and digits to the model-quality metrics (``metrics.QualityRecorder``: every
image's digit and top-1 probability, the input statistics of every ``quality_sample_every``-th
image, computed in bulk off the request path).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

import numpy as np

from contract import (
    INPUT_NAME,
    MAX_BATCH_SIZE,
    OUTPUT_DIGIT,
    OUTPUT_NAMES,
    OUTPUT_PROBABILITIES,
    SIGNATURE_NAME,
)
from contract.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from contract.types import (
    AVAILABLE,
    LOADING,
    IndexRow,
    ModelEntry,
    ModelMetadata,
    VersionStatus,
    check_output_names,
    served_metadata,
)
from contract.v2 import INDEX_LOADING, INDEX_READY, INDEX_UNAVAILABLE
from serving.core.batching import Batcher
from serving.core.control import ModelControl
from serving.core.models import ServedModel, ServedModels
from serving.core.repository import ModelRepository
from serving.core.runtime import LoadedModel, prepare_images, signature_check
from serving.observability import metrics
from serving.settings import Settings

_INDEX_STATE = {AVAILABLE: INDEX_READY, LOADING: INDEX_LOADING}


class DataPlane:
    """Predict / metadata / status over the served models, each through its own batcher if any."""

    def __init__(
        self,
        models: ServedModels | ModelRepository,
        batcher: Batcher | None = None,
        max_batch: int = MAX_BATCH_SIZE,
        quality_sample_every: int = Settings.quality_sample_every,
        control: ModelControl | None = None,
        strict_readiness: bool = Settings.strict_readiness,
    ) -> None:
        # One repository (and its batcher) is a server of one model, built by the caller.
        if isinstance(models, ModelRepository):
            models = ServedModels.of(models, batcher)
        self.models = models
        self.control = control  # None: the models are fixed (built by the caller)
        self.strict_readiness = strict_readiness
        self.max_batch = max_batch
        self.quality_sample_every = max(1, quality_sample_every)
        self._recorders: dict[tuple[str, int], metrics.QualityRecorder] = {}  # per model version
        self._draining = threading.Event()

    @property
    def default_model(self) -> str:
        """The model a page or a probe means when it names none: the first served, by name."""
        names = self.models.names()
        return names[0] if names else ""

    # --- lifecycle -----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Ready to take traffic: every served model has a version AVAILABLE (any one, without
        strict readiness), and we are not shutting down."""
        return self.models.ready(self.strict_readiness) and not self._draining.is_set()

    def start_draining(self) -> None:
        """Readiness turns false; requests already accepted still finish."""
        self._draining.set()

    # --- the three operations ------------------------------------------------------------------
    def _named(self, name: str) -> ServedModel:
        """The served model ``name``; NOT_FOUND naming the served ones otherwise. ``name`` is then
        the request's ``model`` label (an unknown name never is: clients could make any number of
        series)."""
        served = self.models.get(name)
        metrics.request_addressed(name)
        return served

    def resolve(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> LoadedModel:
        """The loaded version a request addresses; NOT_FOUND / UNAVAILABLE otherwise."""
        return self._resolve(self._named(name), version, label)

    @staticmethod
    def _resolve(served: ServedModel, version: int | None, label: str | None) -> LoadedModel:
        model = served.repository.get(version, label)
        metrics.request_addressed(served.name, model.version)
        return model

    def predict(
        self,
        name: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: int | None = None,
        label: str | None = None,
        signature_name: str = "",
        output_filter: Iterable[str] = (),
        timeout: float | None = None,
    ) -> tuple[int, dict[str, np.ndarray]]:
        """Run the model; returns the version that answered and the requested outputs."""
        served = self._named(name)
        model = self._resolve(served, version, label)
        signature_check(signature_name, SIGNATURE_NAME)
        unknown = sorted(set(inputs) - {INPUT_NAME})
        if unknown or INPUT_NAME not in inputs:
            raise InvalidArgument(
                f"this model takes one input named {INPUT_NAME!r}, got {sorted(inputs) or 'none'}"
            )
        wanted = tuple(output_filter) or OUTPUT_NAMES
        check_output_names(wanted, "output_filter names {unknown}; this model outputs {outputs}")
        images = prepare_images(inputs[INPUT_NAME], self.max_batch)
        if served.batcher is not None:
            outputs = served.batcher.run(model, images, timeout)
        else:
            outputs = model.run(images)
            metrics.BATCH_SIZE.observe(len(images))
        self._observe_quality(name, model.version, images, outputs)
        return model.version, {key: outputs[key] for key in OUTPUT_NAMES if key in wanted}

    def _observe_quality(
        self, name: str, version: int, images: np.ndarray, outputs: Mapping[str, np.ndarray]
    ) -> None:
        """Hand one answered batch to the model-quality metrics (they compute in bulk, later)."""
        recorder = self._recorders.get((name, version))
        if recorder is None:
            recorder = metrics.QualityRecorder(name, version, self.quality_sample_every)
            recorder = self._recorders.setdefault((name, version), recorder)
        recorder.answered(images, outputs[OUTPUT_PROBABILITIES], outputs[OUTPUT_DIGIT])

    def metadata(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> ModelMetadata:
        """The addressed version and its signature map (every version serves the contract's)."""
        model = self.resolve(name, version, label)
        return served_metadata(name, model.version)

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        """One row per version the repository knows of (or the one addressed), ascending."""
        served = self._named(name)
        if label is not None:
            version = self._resolve(served, None, label).version
        rows = served.repository.statuses(version)
        if not rows and version is None:
            raise NotFound(f"model {name!r} has no versions under {served.repository.base_path}")
        return rows

    # --- readiness and versions (the Open Inference Protocol asks for them as such) -------------
    def available_versions(self, name: str) -> list[int]:
        """The versions that serve now (AVAILABLE), ascending; empty while none has loaded."""
        served = self._named(name)
        return [row.version for row in served.repository.statuses() if row.available]

    def model_ready(self, name: str, version: int | None = None) -> bool:
        """True when the version a request would address (default: the highest served) is
        AVAILABLE and the server is not draining, so that a predict on it would be taken.
        Another model's name is NOT_FOUND."""
        served = self._named(name)
        try:
            model = served.repository.get(version)
        except (NotFound, Unavailable):
            return False
        metrics.request_addressed(name, model.version)
        return not self._draining.is_set()

    def described_versions(self, name: str, version: int | None = None) -> list[int]:
        """The versions V2 model metadata lists: the addressed one alone, or by default every
        AVAILABLE one. NOT_FOUND for an unknown model or version, UNAVAILABLE while none loaded."""
        model = self.resolve(name, version)
        if version is not None:
            return [model.version]
        return self.available_versions(name) or [model.version]

    # --- the repository index (the Open Inference Protocol's model repository extension) --------
    def repository_index(self, ready_only: bool = False) -> list[IndexRow]:
        """One row per version of every served model (READY, LOADING or UNAVAILABLE with its
        error), and one per unloaded model; ``ready_only``: the READY rows alone."""
        rows = []
        for served in self.models.values():
            statuses = served.repository.statuses()
            rows += [IndexRow(served.name, str(status.version),
                              _INDEX_STATE.get(status.state, INDEX_UNAVAILABLE), status.error_message)
                     for status in statuses]
            if not statuses:
                rows.append(IndexRow(served.name, "", INDEX_UNAVAILABLE,
                                     f"no versions under {served.repository.base_path}"))
        rows += [IndexRow(entry.name, "", INDEX_UNAVAILABLE, "unloaded")
                 for entry in self.models.unloaded]
        if ready_only:
            rows = [row for row in rows if row.state == INDEX_READY]
        return sorted(rows, key=lambda row: (row.name, row.version))

    # --- runtime changes (TF Serving's config reload, the V2 repository's load and unload) -------
    def _control(self, what: str) -> ModelControl:
        if self.control is None:
            raise PermissionDenied(f"{what} is refused: this server's models are fixed")
        return self.control

    def reload_config(self, models: list[ModelEntry], timeout: float | None = None) -> None:
        """Serve exactly ``models`` on every worker; returns once all of them do."""
        self._control("reloading the model config").reload(models, timeout)

    def load_model(self, name: str, timeout: float | None = None) -> None:
        """Serve an unloaded model of the config again, on every worker."""
        self._control(f"loading model {name!r}").load(name, timeout)
        metrics.request_addressed(name)  # a configured name: the access log and metrics say it

    def unload_model(self, name: str, timeout: float | None = None) -> None:
        """Stop serving a model of the config on every worker; in-flight requests finish."""
        self._control(f"unloading model {name!r}").unload(name, timeout)
        metrics.request_addressed(name)
