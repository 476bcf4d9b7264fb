"""The one source of truth for the digits serving contract.

Model name, signature, tensor names/shapes/dtypes, ports, HTTP paths, gRPC method paths and the
model-repository layout are defined here once. Training, serving, the client, the Locust users,
the manifests' tests and the benchmarks import these names; nobody else writes ``28`` or ``8501``.

This module imports nothing beyond the standard library so that every component, including the
TensorFlow-free serving image, can import it cheaply.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# --- The model ---------------------------------------------------------------------------------
MODEL_NAME = "lenet5"
SIGNATURE_NAME = "serving_default"
PREDICT_METHOD_NAME = "tensorflow/serving/predict"

IMAGE_SIZE = 28  # MNIST digits are 28x28 grey images
CHANNELS = 1
NUM_CLASSES = 10
INPUT_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, CHANNELS)  # one image; requests are [N, *INPUT_SHAPE]
PIXELS = IMAGE_SIZE * IMAGE_SIZE
PIXEL_SCALE = 255.0  # MNIST scaling: float pixel = byte / 255, so inputs lie in [0, 1]

INPUT_NAME = "image"
INPUT_DTYPE = "float32"
OUTPUT_PROBABILITIES = "probabilities"  # float32 [N, 10], softmax
OUTPUT_DIGIT = "digit"  # int64 [N], argmax of the probabilities
OUTPUT_NAMES = (OUTPUT_PROBABILITIES, OUTPUT_DIGIT)
# name -> (numpy dtype name, shape with None for the batch dimension)
INPUT_SPEC = {INPUT_NAME: (INPUT_DTYPE, (None, *INPUT_SHAPE))}
OUTPUT_SPEC = {
    OUTPUT_PROBABILITIES: ("float32", (None, NUM_CLASSES)),
    OUTPUT_DIGIT: ("int64", (None,)),
}
# Largest batch a single request may carry (serving refuses more with INVALID_ARGUMENT / 400).
MAX_BATCH_SIZE = 1024

# --- Ports and paths (TensorFlow Serving's) ----------------------------------------------------
GRPC_PORT = 8500
REST_PORT = 8501
REST_MODELS_PREFIX = "/v1/models"
METRICS_PATH = "/monitoring/prometheus/metrics"
METRICS_ALIAS_PATH = "/metrics"
LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"

# gRPC method paths bound in code (our messages live in our own proto package; see protos/).
PREDICT_RPC = "/tensorflow.serving.PredictionService/Predict"
GET_MODEL_METADATA_RPC = "/tensorflow.serving.PredictionService/GetModelMetadata"
GET_MODEL_STATUS_RPC = "/tensorflow.serving.ModelService/GetModelStatus"
SIGNATURE_DEF_MAP_TYPE_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
METADATA_FIELD_SIGNATURE_DEF = "signature_def"

# --- Model repository layout: <base>/<integer version>/ -----------------------------------------
DEFAULT_MODEL_BASE_PATH = Path("models") / MODEL_NAME
ONNX_FILENAME = "model.onnx"
SAVED_MODEL_FILENAME = "saved_model.pb"
MODEL_CARD_FILENAME = "model-card.json"
_VERSION_DIR = re.compile(r"^[0-9]+$")


def model_versions(base_path: str | os.PathLike[str]) -> list[int]:
    """The integer version directories under ``base_path``, ascending (temporary dirs ignored)."""
    base = Path(base_path)
    if not base.is_dir():
        return []
    return sorted(
        int(entry.name)
        for entry in base.iterdir()
        if _VERSION_DIR.match(entry.name) and entry.is_dir()
    )


def version_path(base_path: str | os.PathLike[str], version: int) -> Path:
    """The directory of one model version."""
    return Path(base_path) / str(version)


# --- Data --------------------------------------------------------------------------------------
MNIST_DIR_ENV = "MNIST_DIR"
DEFAULT_MNIST_DIR = Path("data") / "mnist"

# --- Errors: one family keyed by the gRPC status code; HTTP derived by TF Serving's table --------
# gRPC status code name -> HTTP status, as TF Serving maps them (anything else -> 500).
GRPC_CODE_TO_HTTP = {
    "OK": 200,
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "CANCELLED": 499,
}
HTTP_INTERNAL_ERROR = 500


def http_status_for(grpc_code_name: str) -> int:
    """HTTP status for a gRPC status code name (e.g. ``"INVALID_ARGUMENT"`` -> 400)."""
    return GRPC_CODE_TO_HTTP.get(grpc_code_name, HTTP_INTERNAL_ERROR)
