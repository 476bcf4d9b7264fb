"""Model repository: load with warm-up, availability-preserving swap, failures, policy, labels."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from contract import INPUT_SHAPE, MODEL_NAME, OUTPUT_DIGIT, OUTPUT_PROBABILITIES
from contract.errors import NotFound, Unavailable
from serving.core.repository import AVAILABLE, END, ModelRepository
from tests.serving.conftest import write_model


def _repo(base: Path, **kwargs) -> ModelRepository:
    repository = ModelRepository(MODEL_NAME, base, poll_wait_seconds=0, **kwargs)
    repository.start()
    return repository


def test_serves_highest_version_and_runs(repository_copy: Path) -> None:
    write_model(repository_copy / "3", seed=3)
    write_model(repository_copy / "2", seed=2)
    repository = _repo(repository_copy)
    model = repository.get()
    assert model.version == 3 and repository.ready
    out = model.run(np.zeros((2, *INPUT_SHAPE), np.float32))
    assert out[OUTPUT_PROBABILITIES].shape == (2, 10) and out[OUTPUT_DIGIT].dtype == np.int64
    with pytest.raises(NotFound):
        repository.get(version=1)  # latest:1 unloaded it
    assert [(s.version, s.state) for s in repository.statuses()] == [(3, AVAILABLE)]


@pytest.mark.parametrize("kind", ["corrupt", "wrong_input", "wrong_shape", "missing"])
def test_failed_new_version_is_reported_and_previous_keeps_serving(repository_copy: Path, kind: str) -> None:
    repository = _repo(repository_copy)
    held = repository.get()
    write_model(repository_copy / "2", kind)
    repository.poll_once()
    assert repository.get().version == 1 and repository.get() is held
    status = repository.statuses(2)[0]
    assert status.state == END and status.error_code != "OK" and status.error_message
    # Not retried while the files are unchanged, retried (and served) once fixed.
    repository.poll_once()
    assert repository.statuses(2)[0].error_message == status.error_message
    shutil.rmtree(repository_copy / "2")
    write_model(repository_copy / "2", "good", seed=5)
    repository.poll_once()
    assert repository.get().version == 2


def test_swap_keeps_old_object_usable_for_in_flight_requests(repository_copy: Path) -> None:
    repository = _repo(repository_copy)
    in_flight = repository.get()
    write_model(repository_copy / "2", seed=9)
    repository.poll_once()
    assert repository.get().version == 2
    assert [(s.version, s.state) for s in repository.statuses()] == [(1, END), (2, AVAILABLE)]
    # A request that took version 1 before the swap still finishes on it.
    assert in_flight.run(np.zeros((1, *INPUT_SHAPE), np.float32))[OUTPUT_DIGIT].shape == (1,)


def test_policies_and_labels(repository_copy: Path) -> None:
    for v in (2, 3):
        write_model(repository_copy / str(v), seed=v)
    repository = _repo(repository_copy, policy="all", labels={"stable": 2, "canary": 3})
    assert {repository.get(version=v).version for v in (1, 2, 3)} == {1, 2, 3}
    assert repository.get(label="stable").version == 2
    with pytest.raises(NotFound):
        repository.get(label="nope")
    specific = _repo(repository_copy, policy="specific:1,2")
    assert specific.get().version == 2
    latest2 = _repo(repository_copy, policy="latest:2")
    assert sorted(s.version for s in latest2.statuses() if s.state == AVAILABLE) == [2, 3]


def test_empty_repository_is_unavailable_not_ready(tmp_path: Path) -> None:
    repository = _repo(tmp_path / "empty")
    assert not repository.ready
    with pytest.raises(Unavailable):
        repository.get()


@pytest.mark.parametrize("policy, served", [("latest:1", [2]), ("latest:2", [1, 2])])
def test_first_scan_falls_back_past_a_broken_newest_version(
    repository_copy: Path, policy: str, served: list[int]
) -> None:
    """A fresh (or respawned) worker serves from its first scan: never 'nothing yet' for a poll."""
    write_model(repository_copy / "2", seed=2)
    write_model(repository_copy / "3", "corrupt")
    repository = _repo(repository_copy, policy=policy)
    assert repository.ready
    assert sorted(s.version for s in repository.statuses() if s.state == AVAILABLE) == served
    assert repository.get().version == 2
    assert repository.statuses(3)[0].state == END
