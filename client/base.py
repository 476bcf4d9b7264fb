"""The client interface every protocol implements, and the plain results it returns.

:class:`DigitsClient` is what callers program against; :mod:`client.rest_client` and
:mod:`client.grpc_client` implement it by speaking TensorFlow Serving's own REST and gRPC APIs, so
either works unchanged against TF Serving; :mod:`client.v2_rest_client` and
:mod:`client.v2_grpc_client` speak the Open Inference Protocol (V2); :mod:`client.api` picks one.
Results are plain dataclasses (here and in :mod:`contract.types`) and numpy arrays: no protobuf or
JSON leaks out.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

import contract
from contract.errors import ProtocolError
from contract.types import ModelMetadata, VersionStatus

DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ModelSpec:
    """Which model, version (or label) and signature a request addresses.

    ``version`` and ``label`` are exclusive (as in TF Serving's ``ModelSpec.version_choice``);
    neither means the server's default (its highest available version).
    """

    name: str = contract.MODEL_NAME
    version: int | None = None
    label: str | None = None
    signature_name: str = contract.SIGNATURE_NAME

    def __post_init__(self) -> None:
        if self.version is not None and self.label is not None:
            raise ValueError("give a model version or a version label, not both")
        if self.version is not None and self.version < 0:
            raise ValueError(f"model version must be >= 0, got {self.version}")
        if not self.name:
            raise ValueError("model name must not be empty")


@dataclass(frozen=True)
class Prediction:
    """The model's answer for N images: ``probabilities`` [N, 10] and ``digits`` [N]."""

    probabilities: np.ndarray
    digits: np.ndarray
    model_version: int | None = None  # gRPC reports it; TF Serving's REST predict does not

    def __len__(self) -> int:
        return int(self.digits.shape[0])

    def confidence(self) -> np.ndarray:
        """The probability of each chosen digit, [N]."""
        return self.probabilities[np.arange(len(self)), self.digits]


def as_batch(images: np.ndarray) -> np.ndarray:
    """Images as the contract's float32 [N, 28, 28, 1] batch; one image [28, 28(, 1)] becomes N=1.

    Raises ValueError for anything else, before a request is sent: the server would refuse it,
    but a local message is clearer and costs no round trip.
    """
    arr = np.asarray(images, dtype=np.float32)
    if arr.shape in ((contract.IMAGE_SIZE, contract.IMAGE_SIZE), contract.INPUT_SHAPE):
        arr = arr.reshape(1, *contract.INPUT_SHAPE)
    elif arr.ndim == 3 and arr.shape[1:] == (contract.IMAGE_SIZE, contract.IMAGE_SIZE):
        arr = arr[..., np.newaxis]
    if arr.ndim != 4 or arr.shape[1:] != contract.INPUT_SHAPE:
        raise ValueError(
            f"images must have shape [N, {', '.join(map(str, contract.INPUT_SHAPE))}], "
            f"got {list(np.shape(images))}"
        )
    if arr.shape[0] == 0:
        raise ValueError("no images to predict")
    return arr


def checked_prediction(
    probabilities: np.ndarray,
    digits: np.ndarray,
    expected: int | None,
    version: int | None,
    protocol: str,
) -> Prediction:
    """A Prediction after checking the answer's shapes against the request (N images in)."""
    n = digits.shape[0] if digits.ndim == 1 else -1
    if probabilities.shape != (n, contract.NUM_CLASSES) or (expected is not None and n != expected):
        raise ProtocolError(
            f"answer has probabilities {list(probabilities.shape)} and digits "
            f"{list(digits.shape)}; expected [{expected}, {contract.NUM_CLASSES}] and [{expected}]",
            protocol=protocol,
        )
    return Prediction(probabilities=probabilities, digits=digits, model_version=version)


class DigitsClient(abc.ABC):
    """predict / status / metadata / ready against one server, over REST or gRPC.

    Every call raises :class:`contract.errors.ServingError` (a subclass per status code) when the
    server refuses it or cannot be reached within ``timeout`` seconds.
    """

    protocol: str = ""

    def __init__(self, spec: ModelSpec | None = None, *, timeout: float = DEFAULT_TIMEOUT_S):
        self.spec = spec or ModelSpec()
        self.timeout = timeout

    @abc.abstractmethod
    def predict(self, images: np.ndarray) -> Prediction:
        """Classify a batch of images (float32 [N, 28, 28, 1] in [0, 1], or one image)."""

    @abc.abstractmethod
    def status(self) -> list[VersionStatus]:
        """The state of the addressed model's versions (only the one asked for, if any)."""

    @abc.abstractmethod
    def metadata(self) -> ModelMetadata:
        """The addressed model version's signature map."""

    def ready(self) -> bool:
        """Whether the addressed model (version) can serve predictions now.

        TF Serving's APIs say it through the version states; V2 clients ask the protocol's
        readiness endpoint instead.
        """
        return any(v.available for v in self.status())

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; the client is unusable afterwards."""

    def __enter__(self) -> DigitsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
