"""digits' foundation: the wire contract that training, serving, the client and the load tests share.

This top-level module is the model contract: model name, signature, tensor names/shapes/dtypes,
ports, HTTP paths, gRPC method paths and the model-repository layout, defined here once. Nobody
else writes ``28`` or ``8501``. The submodules hold the rest of the foundation:

- :mod:`contract.errors`  the one error family (gRPC code -> HTTP status), both sides of the wire
- :mod:`contract.types`   protocol-neutral results: version status, model metadata
- :mod:`contract.codecs`  numpy arrays <-> TensorProto
- :mod:`contract.proto`   our ``.proto`` files and their generated modules
- :mod:`contract.mnist`   the MNIST IDX reader and the official checksums

The package imports none of training, serving or client (import-linter checks it) and depends
on numpy and protobuf only; this module itself on the standard library only.
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
RELOAD_CONFIG_RPC = "/tensorflow.serving.ModelService/HandleReloadConfigRequest"
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
