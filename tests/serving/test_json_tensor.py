"""The fast JSON pixel path must agree with the general JSON path on everything it accepts."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract import INPUT_SHAPE, PIXELS
from serving.protocols.tfserving.json_tensor import parse_predict_body


def _general(body: bytes) -> np.ndarray:
    obj = orjson.loads(body)
    value = obj.get("instances", obj.get("inputs"))
    if isinstance(value, dict):
        value = value["image"]
    return np.asarray(value, dtype=np.float64)


@pytest.mark.parametrize("shape", [(1, *INPUT_SHAPE), (3, 28, 28), (2, PIXELS)])
@pytest.mark.parametrize("key", ["instances", "inputs"])
def test_common_bodies_take_the_fast_path_with_identical_values(shape: tuple, key: str) -> None:
    images = np.random.default_rng(1).random(shape, dtype=np.float32)
    for body in (
        json.dumps({key: images.tolist()}).encode(),
        orjson.dumps({"signature_name": "serving_default", key: images.tolist()}),
        orjson.dumps({key: images.tolist(), "signature_name": "s"}),
    ):
        parsed = parse_predict_body(body)
        assert parsed is not None
        assert parsed[1] == (key == "instances")
        np.testing.assert_array_equal(parsed[2], _general(body))


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [[0.1, 0.2]]}',  # shape we do not fast-path
        b'{"instances": [' + b",".join([b"0.5"] * (PIXELS - 1)) + b"]}",  # not rank 2
        b'{"inputs": [[' + b",".join([b"0.5"] * PIXELS) + b"],[0.5]]}",  # ragged
        b'{"inputs": [[' + b" ".join([b"0.5"] * PIXELS) + b"]]}",  # no commas
        b'{"inputs": [[' + b",".join([b"NaN"] * PIXELS) + b"]]}",  # not JSON numbers
        b'{"inputs": [[' + b",".join([b"-"] * PIXELS) + b"]]}",
        b'{"instances": {"image": [[0.5]]}}',
        b'{"signature_name": "a", "inputs": [[0.5]], "signature_name": "b"}',
        b'{"inputs": [[0.5]], "extra": 1}',
        b"[[0.5]]",
    ],
)
def test_anything_unusual_falls_back(body: bytes) -> None:
    assert parse_predict_body(body) is None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.one_of(st.floats(0, 1), st.integers(0, 1)), min_size=PIXELS, max_size=PIXELS),
        min_size=1,
        max_size=3,
    ),
    st.sampled_from(["instances", "inputs"]),
    st.booleans(),
)
def test_fast_path_equals_general_path(rows: list, key: str, pretty: bool) -> None:
    body = json.dumps({key: rows}, indent=1 if pretty else None).encode()
    parsed = parse_predict_body(body)
    if parsed is not None:
        np.testing.assert_array_equal(parsed[2], _general(body))
    else:
        assert pretty  # only the pretty-printed bodies may fall back


def test_integers_signs_and_exponents_convert_as_the_general_path() -> None:
    """Large integers (beyond 2**53 and 2**63), -0.0 and exponents: the same float64 values."""
    tokens = [b"12345678901234567890", b"9007199254740993", b"0", b"-0.0", b"1E-7", b"0.1e+2", b"1"]
    numbers = b",".join(tokens[i % len(tokens)] for i in range(PIXELS))
    body = b'{"inputs": [[' + numbers + b"]]}"
    parsed = parse_predict_body(body)
    assert parsed is not None
    expected = _general(body)
    np.testing.assert_array_equal(parsed[2], expected)
    assert np.array_equal(np.signbit(parsed[2]), np.signbit(expected))
