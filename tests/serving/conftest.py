"""A tiny real ONNX model with the contract's names, built once per session (no TensorFlow).

It is a linear softmax classifier (``image`` -> ``probabilities``, ``digit``) made with the
``onnx`` helper API: small enough to build in milliseconds, real enough that ONNX Runtime loads
and runs it exactly as it runs the exported LeNet-5. ``write_model`` also writes deliberately
broken variants for the repository tests.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from contract import (
    INPUT_NAME,
    MODEL_NAME,
    NUM_CLASSES,
    ONNX_FILENAME,
    OUTPUT_DIGIT,
    OUTPUT_PROBABILITIES,
    PIXELS,
)


def build_model(
    seed: int = 0,
    *,
    input_name: str = INPUT_NAME,
    digit_name: str = OUTPUT_DIGIT,
    pixels: int = PIXELS,
) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    weights = (rng.normal(size=(pixels, NUM_CLASSES)) * 0.1).astype(np.float32)
    side = int(round(pixels**0.5))
    nodes = [
        helper.make_node("Reshape", [input_name, "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [OUTPUT_PROBABILITIES], axis=1),
        helper.make_node("ArgMax", [OUTPUT_PROBABILITIES], [digit_name], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_digits",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", side, side, 1])],
        [
            helper.make_tensor_value_info(OUTPUT_PROBABILITIES, TensorProto.FLOAT, ["N", NUM_CLASSES]),
            helper.make_tensor_value_info(digit_name, TensorProto.INT64, ["N"]),
        ],
        [
            numpy_helper.from_array(np.array([-1, pixels], np.int64), "shape"),
            numpy_helper.from_array(weights, "W"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_model(directory: Path, kind: str = "good", seed: int = 0) -> Path:
    """Write ``model.onnx`` of one kind: good, corrupt, wrong_input, wrong_shape, missing."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ONNX_FILENAME
    if kind == "good":
        onnx.save(build_model(seed), path)
    elif kind == "corrupt":
        path.write_bytes(b"this is not an onnx model\x00\x01")
    elif kind == "wrong_input":
        onnx.save(build_model(seed, input_name="pixels"), path)
    elif kind == "wrong_shape":
        onnx.save(build_model(seed, pixels=16 * 16), path)
    elif kind == "missing":
        (directory / "README").write_text("no model here")
    else:
        raise ValueError(kind)
    return directory


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only repository ``<tmp>/lenet5/1/model.onnx`` with the tiny model."""
    base = tmp_path_factory.mktemp("tiny") / MODEL_NAME
    write_model(base / "1")
    return base


@pytest.fixture
def repository_copy(tiny_repository: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the tiny repository for tests that add or break versions."""
    destination = tmp_path / MODEL_NAME
    shutil.copytree(tiny_repository, destination)
    return destination
