"""ONNX Runtime: one loaded model version, and the validation of images before they reach it.

A ``LoadedModel`` owns one ``onnxruntime.InferenceSession`` for ``<version dir>/model.onnx``.
Loading checks the graph against the contract (input ``image`` float32 [N,28,28,1]; outputs
``probabilities`` float32 [N,10] and ``digit`` int64 [N]) so a wrongly exported model is refused
before it can take traffic. ``prepare_images`` turns whatever a client sent into the contract's
[N,28,28,1] float32 batch or raises ``InvalidArgument`` saying what to fix.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contract import (
    IMAGE_SIZE,
    INPUT_NAME,
    INPUT_SHAPE,
    INPUT_SPEC,
    MAX_BATCH_SIZE,
    ONNX_FILENAME,
    OUTPUT_DIGIT,
    OUTPUT_NAMES,
    OUTPUT_SPEC,
    PIXEL_SCALE,
    PIXELS,
)
from contract.errors import FailedPrecondition, InvalidArgument, NotFound
from serving.settings import Settings

logger = logging.getLogger(__name__)

_ORT_TYPES = {"float32": "tensor(float)", "int64": "tensor(int64)"}
# Shapes a client may send for N images; all are the same pixels in row-major order.
ACCEPTED_SHAPES = f"[N,{IMAGE_SIZE},{IMAGE_SIZE},1], [N,{IMAGE_SIZE},{IMAGE_SIZE}] or [N,{PIXELS}]"


def _check_io(kind: str, got: list, spec: dict[str, tuple[str, tuple]]) -> None:
    by_name = {arg.name: arg for arg in got}
    missing = sorted(set(spec) - set(by_name))
    if missing:
        raise InvalidArgument(
                f"model {kind}s {sorted(by_name)} lack {missing} required by the serving contract",
        )
    for name, (dtype, shape) in spec.items():
        arg = by_name[name]
        if arg.type != _ORT_TYPES[dtype]:
            raise InvalidArgument(
                f"model {kind} {name!r} has type {arg.type}, expected {dtype}"
            )
        # The batch dimension may be symbolic or fixed; the others must match exactly.
        if len(arg.shape) != len(shape) or any(
            want is not None and got_dim != want
            for got_dim, want in zip(arg.shape, shape, strict=False)
        ):
            raise InvalidArgument(
                f"model {kind} {name!r} has shape {arg.shape}, expected {['N', *shape[1:]]}",
            )


class LoadedModel:
    """One model version, loaded and checked; ``run`` is thread-safe (ORT sessions are)."""

    def __init__(
        self,
        version: int,
        directory: Path,
        intra_op_threads: int = Settings.tensorflow_intra_op_parallelism,
    ) -> None:
        self.version = version
        self.directory = directory
        path = directory / ONNX_FILENAME
        if not path.is_file():
            raise NotFound(f"{path} does not exist")
        options = ort.SessionOptions()
        # One intra-op thread per worker process: the worker processes already use every core,
        # and ORT's own pool only adds hand-offs.
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own exception types for corrupt graphs
            raise InvalidArgument(
                f"cannot load {path}: {exc}") from None
        _check_io("input", self.session.get_inputs(), INPUT_SPEC)
        _check_io("output", self.session.get_outputs(), OUTPUT_SPEC)
        fixed_batch = self.session.get_inputs()[0].shape[0]
        self.fixed_batch = fixed_batch if isinstance(fixed_batch, int) else None

    def run(
        self, images: np.ndarray, outputs: tuple[str, ...] = OUTPUT_NAMES
    ) -> dict[str, np.ndarray]:
        """Outputs for a [N,28,28,1] float32 batch already checked by ``prepare_images``."""
        values = self.session.run(list(outputs), {INPUT_NAME: images})
        return dict(zip(outputs, values, strict=True))

    def warm_up(self) -> None:
        """One inference on a blank image so the first real request pays no lazy set-up."""
        batch = self.fixed_batch or 1
        result = self.run(np.zeros((batch, *INPUT_SHAPE), dtype=np.float32))
        if result[OUTPUT_DIGIT].shape != (batch,):
            raise InvalidArgument(
                f"warm-up returned {OUTPUT_DIGIT} of shape {result[OUTPUT_DIGIT].shape}",
            )


def prepare_images(array: np.ndarray, max_batch: int = MAX_BATCH_SIZE) -> np.ndarray:
    """Check and reshape client pixels into the contract's float32 [N,28,28,1] batch."""
    if array.dtype.kind not in "fiub" or array.dtype.kind == "b":
        raise InvalidArgument(
            f"input {INPUT_NAME!r} must be numbers (float pixels in [0, 1]), got {array.dtype}"
        )
    shape = array.shape
    if len(shape) == 4 and shape[1:] == INPUT_SHAPE:
        pass
    elif len(shape) == 3 and shape[1:] == (IMAGE_SIZE, IMAGE_SIZE):
        array = array.reshape(shape[0], *INPUT_SHAPE)
    elif len(shape) == 2 and shape[1] == PIXELS:
        array = array.reshape(shape[0], *INPUT_SHAPE)
    else:
        raise InvalidArgument(
            f"input {INPUT_NAME!r} has shape {list(shape)}; expected {ACCEPTED_SHAPES}"
        )
    count = array.shape[0]
    if count == 0:
        raise InvalidArgument(f"input {INPUT_NAME!r} holds no images")
    if count > max_batch:
        raise InvalidArgument(
            f"{count} images in one request; at most {max_batch}, split the batch"
        )
    if array.dtype != np.float32:
        array = array.astype(np.float32)
    # min/max propagate NaN, so one pass each catches non-finite values too.
    low, high = float(array.min()), float(array.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        raise InvalidArgument(
            f"input {INPUT_NAME!r} contains NaN or infinite values; send finite pixels in [0, 1]"
        )
    if low < 0.0 or high > 1.0:
        raise InvalidArgument(
            f"pixel values must lie in [0, 1], got min {low:g} max {high:g}; scale raw 0-255 "
            f"pixels by dividing by {PIXEL_SCALE:g} (MNIST scaling)"
        )
    return array


def signature_check(signature_name: str, known: str) -> None:
    """Only the one serving signature exists; an empty name means it (as in TF Serving)."""
    if signature_name and signature_name != known:
        raise FailedPrecondition(
            f"serving signature name {signature_name!r} not found; this model has {known!r}"
        )
