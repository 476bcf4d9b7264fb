"""The data plane over the tiny model: protocol-neutral answers and the errors it raises."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contract import INPUT_NAME, INPUT_SHAPE, MODEL_NAME, OUTPUT_DIGIT, OUTPUT_NAMES
from contract.errors import FailedPrecondition, InvalidArgument, NotFound
from contract.types import AVAILABLE, END, ModelMetadata, VersionStatus, served_metadata
from serving.core.dataplane import DataPlane
from serving.core.repository import ModelRepository
from tests.serving.conftest import write_model


@pytest.fixture
def dataplane(repository_copy: Path) -> DataPlane:
    write_model(repository_copy / "2", "corrupt")
    repository = ModelRepository(
        MODEL_NAME, repository_copy, policy="all", labels={"stable": 1}, poll_wait_seconds=0
    )
    repository.start()
    return DataPlane(repository)


def test_metadata_is_the_contracts_signature_for_the_addressed_version(dataplane: DataPlane) -> None:
    metadata = dataplane.metadata(MODEL_NAME)
    assert isinstance(metadata, ModelMetadata)
    assert metadata == served_metadata(MODEL_NAME, 1)
    assert dataplane.metadata(MODEL_NAME, label="stable").version == 1
    with pytest.raises(NotFound, match="version 2 is not served"):
        dataplane.metadata(MODEL_NAME, 2)  # failed to load: reported in status, never served


def test_status_rows_are_version_statuses(dataplane: DataPlane) -> None:
    rows = dataplane.status(MODEL_NAME)
    assert [type(r) for r in rows] == [VersionStatus, VersionStatus]
    assert [(r.version, r.state, r.error_code) for r in rows] == [
        (1, AVAILABLE, "OK"),
        (2, END, "INVALID_ARGUMENT"),
    ]
    assert "model.onnx" in rows[1].error_message
    assert dataplane.status(MODEL_NAME, 2) == [rows[1]]
    assert dataplane.status(MODEL_NAME, label="stable") == [rows[0]]
    with pytest.raises(NotFound, match="has no version 9"):
        dataplane.status(MODEL_NAME, 9)


def test_status_of_an_empty_repository_is_not_found(tmp_path: Path) -> None:
    repository = ModelRepository(MODEL_NAME, tmp_path, poll_wait_seconds=0)
    repository.start()
    with pytest.raises(NotFound, match="has no versions"):
        DataPlane(repository).status(MODEL_NAME)


@pytest.mark.parametrize("operation", ["predict", "metadata", "status"])
def test_another_model_name_is_not_found(dataplane: DataPlane, operation: str) -> None:
    args = ({INPUT_NAME: np.zeros((1, *INPUT_SHAPE), np.float32)},) if operation == "predict" else ()
    with pytest.raises(NotFound, match="'other' is not served here"):
        getattr(dataplane, operation)("other", *args)


def test_predict_answers_with_the_version_and_the_filtered_outputs(dataplane: DataPlane) -> None:
    images = np.random.default_rng(1).random((3, *INPUT_SHAPE), dtype=np.float32)
    version, outputs = dataplane.predict(MODEL_NAME, {INPUT_NAME: images})
    assert version == 1 and tuple(outputs) == OUTPUT_NAMES
    _, only_digit = dataplane.predict(MODEL_NAME, {INPUT_NAME: images}, output_filter=[OUTPUT_DIGIT])
    assert list(only_digit) == [OUTPUT_DIGIT]
    np.testing.assert_array_equal(only_digit[OUTPUT_DIGIT], outputs[OUTPUT_DIGIT])


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"signature_name": "nope"}, FailedPrecondition),
        ({"output_filter": ["logits"]}, InvalidArgument),
        ({"inputs": {"pixels": np.zeros((1, 784))}}, InvalidArgument),
        ({"inputs": {}}, InvalidArgument),
    ],
)
def test_predict_refuses_what_the_model_does_not_have(
    dataplane: DataPlane, kwargs: dict, error: type
) -> None:
    inputs = kwargs.pop("inputs", {INPUT_NAME: np.zeros((1, *INPUT_SHAPE), np.float32)})
    with pytest.raises(error):
        dataplane.predict(MODEL_NAME, inputs, **kwargs)


def test_draining_turns_readiness_off(dataplane: DataPlane) -> None:
    assert dataplane.ready
    dataplane.start_draining()
    assert not dataplane.ready


def test_a_draining_servers_models_are_not_ready(dataplane: DataPlane) -> None:
    """The one rule both V2 adapters answer model readiness by."""
    assert dataplane.model_ready(MODEL_NAME) and dataplane.model_ready(MODEL_NAME, 1)
    assert not dataplane.model_ready(MODEL_NAME, 2)  # failed to load
    dataplane.start_draining()
    assert not dataplane.model_ready(MODEL_NAME) and not dataplane.model_ready(MODEL_NAME, 1)


def test_described_versions_are_the_addressed_one_or_every_available_one(dataplane: DataPlane) -> None:
    assert dataplane.described_versions(MODEL_NAME) == [1]
    assert dataplane.described_versions(MODEL_NAME, 1) == [1]
    with pytest.raises(NotFound):
        dataplane.described_versions(MODEL_NAME, 2)
    with pytest.raises(NotFound):
        dataplane.described_versions("other")
