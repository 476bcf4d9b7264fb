"""The data plane: all the business logic of predict, metadata and status, for every protocol.

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
from contract.errors import InvalidArgument, NotFound, ServingError, Unavailable
from contract.types import ModelMetadata, VersionStatus, check_output_names, served_metadata
from serving.core.batching import Batcher
from serving.core.repository import ModelRepository
from serving.core.runtime import LoadedModel, prepare_images, signature_check
from serving.observability import metrics
from serving.settings import Settings


class DataPlane:
    """Predict / metadata / status over one model repository, optionally through a batcher."""

    def __init__(
        self,
        repository: ModelRepository,
        batcher: Batcher | None = None,
        max_batch: int = MAX_BATCH_SIZE,
        quality_sample_every: int = Settings.quality_sample_every,
    ) -> None:
        self.repository = repository
        self.model_name = repository.model_name
        self.batcher = batcher
        self.max_batch = max_batch
        self.quality_sample_every = max(1, quality_sample_every)
        self._recorders: dict[int, metrics.QualityRecorder] = {}  # per version
        self._draining = threading.Event()

    # --- lifecycle -----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Ready to take traffic: a version is AVAILABLE and we are not shutting down."""
        return self.repository.ready and not self._draining.is_set()

    def start_draining(self) -> None:
        """Readiness turns false; requests already accepted still finish."""
        self._draining.set()

    # --- the three operations ------------------------------------------------------------------
    def _check_name(self, name: str) -> None:
        if name != self.model_name:
            raise NotFound(
                f"model {name!r} is not served here (this server serves {self.model_name!r})"
            )

    def _named(self, name: str) -> None:
        """NOT_FOUND for another model's name; else ``name`` is the request's ``model`` label
        (another name never is: clients could make any number of series)."""
        self._check_name(name)
        metrics.request_addressed(name)

    def resolve(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> LoadedModel:
        """The loaded version a request addresses; NOT_FOUND / UNAVAILABLE otherwise."""
        self._check_name(name)
        try:
            model = self.repository.get(version, label)
        except ServingError:
            metrics.request_addressed(name)
            raise
        metrics.request_addressed(name, model.version)
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
        model = self.resolve(name, version, label)
        signature_check(signature_name, SIGNATURE_NAME)
        unknown = sorted(set(inputs) - {INPUT_NAME})
        if unknown or INPUT_NAME not in inputs:
            raise InvalidArgument(
                f"this model takes one input named {INPUT_NAME!r}, got {sorted(inputs) or 'none'}"
            )
        wanted = tuple(output_filter) or OUTPUT_NAMES
        check_output_names(wanted, "output_filter names {unknown}; this model outputs {outputs}")
        images = prepare_images(inputs[INPUT_NAME], self.max_batch)
        if self.batcher is not None:
            outputs = self.batcher.run(model, images, timeout)
        else:
            outputs = model.run(images)
            metrics.BATCH_SIZE.observe(len(images))
        self._observe_quality(model.version, images, outputs)
        return model.version, {key: outputs[key] for key in OUTPUT_NAMES if key in wanted}

    def _observe_quality(self, version: int, images: np.ndarray, outputs: Mapping[str, np.ndarray]) -> None:
        """Hand one answered batch to the model-quality metrics (they compute in bulk, later)."""
        recorder = self._recorders.get(version)
        if recorder is None:
            recorder = metrics.QualityRecorder(self.model_name, version, self.quality_sample_every)
            recorder = self._recorders.setdefault(version, recorder)
        recorder.answered(images, outputs[OUTPUT_PROBABILITIES], outputs[OUTPUT_DIGIT])

    def metadata(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> ModelMetadata:
        """The addressed version and its signature map (every version serves the contract's)."""
        model = self.resolve(name, version, label)
        return served_metadata(self.model_name, model.version)

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        """One row per version the repository knows of (or the one addressed), ascending."""
        self._named(name)
        if label is not None:
            version = self.resolve(name, None, label).version
        rows = self.repository.statuses(version)
        if not rows and version is None:
            raise NotFound(f"model {name!r} has no versions under {self.repository.base_path}")
        return rows

    # --- readiness and versions (the Open Inference Protocol asks for them as such) -------------
    def available_versions(self, name: str) -> list[int]:
        """The versions that serve now (AVAILABLE), ascending; empty while none has loaded."""
        self._named(name)
        return [row.version for row in self.repository.statuses() if row.available]

    def model_ready(self, name: str, version: int | None = None) -> bool:
        """True when the version a request would address (default: the highest served) is
        AVAILABLE and the server is not draining, so that a predict on it would be taken.
        Another model's name is NOT_FOUND."""
        self._named(name)
        try:
            served = self.repository.get(version)
        except (NotFound, Unavailable):
            return False
        metrics.request_addressed(name, served.version)
        return not self._draining.is_set()

    def described_versions(self, name: str, version: int | None = None) -> list[int]:
        """The versions V2 model metadata lists: the addressed one alone, or by default every
        AVAILABLE one. NOT_FOUND for an unknown model or version, UNAVAILABLE while none loaded."""
        model = self.resolve(name, version)
        if version is not None:
            return [model.version]
        return self.available_versions(name) or [model.version]
