"""Model repository: load with warm-up, availability-preserving swap, failures and their retries,
policy, labels."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from contract import INPUT_SHAPE, MODEL_NAME, ONNX_FILENAME, OUTPUT_DIGIT, OUTPUT_PROBABILITIES
from contract.errors import NotFound, Unavailable
from serving.core import repository as repository_module
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


# --- load retries (TF Serving's --max_num_load_retries, --load_retry_interval_micros) ---------
class _Clock:
    """A clock the test moves by hand, for the retry interval."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _failed_attempts(base: Path, **kwargs) -> tuple[ModelRepository, list[int]]:
    """A repository (not started) and the versions of its failed load attempts, in order."""
    attempts: list[int] = []
    repository = ModelRepository(
        MODEL_NAME, base, poll_wait_seconds=0, on_load_failed=attempts.append, **kwargs
    )
    return repository, attempts


def test_file_finished_during_a_failed_load_is_retried_not_stuck(
    repository_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kubectl cp / rsync --inplace: the last bytes land while the partial file fails to load.

    The failure belongs to the files as they were before the attempt, so the finished file is
    new files, loaded at the next scan (with the default retry interval, not after it)."""
    write_model(repository_copy / "2", seed=2)
    target = repository_copy / "2" / ONNX_FILENAME
    whole = target.read_bytes()
    target.write_bytes(whole[: len(whole) // 2])
    real = repository_module.LoadedModel

    def loading(version: int, directory: Path, *args):
        try:
            return real(version, directory, *args)
        finally:
            if version == 2 and target.stat().st_size != len(whole):
                target.write_bytes(whole)  # the writer finishes during the attempt

    monkeypatch.setattr(repository_module, "LoadedModel", loading)
    repository = _repo(repository_copy)
    assert repository.get().version == 1 and repository.statuses(2)[0].state == END
    repository.poll_once()
    assert repository.get().version == 2
    assert repository.statuses(2)[0].state == AVAILABLE


def test_transient_failure_is_retried_after_the_interval_up_to_the_limit(
    repository_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_model(repository_copy / "2", seed=2)
    real = repository_module.LoadedModel
    transient = {"left": 2}

    def flaky(version: int, directory: Path, *args):
        if version == 2 and transient["left"]:
            transient["left"] -= 1
            raise RuntimeError("onnxruntime: resource temporarily unavailable")
        return real(version, directory, *args)

    monkeypatch.setattr(repository_module, "LoadedModel", flaky)
    clock = _Clock()
    repository, attempts = _failed_attempts(
        repository_copy, max_load_retries=5, load_retry_interval_seconds=60, clock=clock
    )
    repository.start()
    assert attempts == [2] and repository.get().version == 1
    assert "attempt 1 of 6" in repository.statuses(2)[0].error_message
    clock.now += 59  # the interval is honoured: no attempt before it
    repository.poll_once()
    assert attempts == [2]
    clock.now += 1
    repository.poll_once()
    assert attempts == [2, 2] and repository.get().version == 1
    clock.now += 60
    repository.poll_once()  # the third attempt succeeds
    assert attempts == [2, 2] and repository.get().version == 2
    assert repository.statuses(2)[0].state == AVAILABLE


def test_failed_after_the_retries_until_its_files_change(repository_copy: Path) -> None:
    write_model(repository_copy / "2", "corrupt")
    repository, attempts = _failed_attempts(
        repository_copy, max_load_retries=2, load_retry_interval_seconds=0
    )
    repository.start()  # a failing version does not hold up the start: one attempt, then 1 serves
    assert attempts == [2] and repository.get().version == 1
    for _ in range(5):
        repository.poll_once()
    assert attempts == [2, 2, 2]  # 1 + max_load_retries, then it counts as failed
    status = repository.statuses(2)[0]
    assert status.state == END and "failed 3 attempts" in status.error_message
    assert repository.get().version == 1
    # Other broken files: a fresh count. Then good files: served.
    (repository_copy / "2" / ONNX_FILENAME).write_bytes(b"still not a model, other bytes")
    for _ in range(5):
        repository.poll_once()
    assert attempts == [2] * 6
    write_model(repository_copy / "2", seed=2)  # rewritten in place, same name
    repository.poll_once()
    assert repository.get().version == 2 and attempts == [2] * 6


def test_a_scan_tries_a_failing_version_once_and_loads_the_others(repository_copy: Path) -> None:
    write_model(repository_copy / "2", "corrupt")
    write_model(repository_copy / "3", seed=3)
    repository, attempts = _failed_attempts(
        repository_copy, policy="specific:1,2,3", max_load_retries=5, load_retry_interval_seconds=0
    )
    repository.start()
    assert repository.get().version == 3 and attempts == [2]


def _consistent(repository: ModelRepository, version: int) -> bool:
    """Status says AVAILABLE exactly when the version answers."""
    try:
        repository.get(version=version)
        answers = True
    except (NotFound, Unavailable):
        answers = False
    return (repository.statuses(version)[0].state == AVAILABLE) == answers


def test_available_only_once_the_version_is_in_the_served_set(
    repository_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Status turns AVAILABLE after the swap: never a window where it says so and answers 404."""
    write_model(repository_copy / "2", seed=2)
    write_model(repository_copy / "3", seed=3)
    checks: list[bool] = []
    real_warm_up = repository_module.LoadedModel.warm_up

    def warm_up(model) -> None:
        if model.version == 3:  # version 2 has loaded, version 3 loads in the same scan
            checks.append(_consistent(repository, 2))
        real_warm_up(model)

    monkeypatch.setattr(repository_module.LoadedModel, "warm_up", warm_up)

    def on_loaded(version: int, loaded: bool) -> None:
        checks.append(_consistent(repository, version))

    repository = ModelRepository(
        MODEL_NAME, repository_copy, policy="all", poll_wait_seconds=0, on_loaded=on_loaded
    )
    repository.start()
    assert checks == [True, True, True, True]
    assert [s.state for s in repository.statuses()] == [AVAILABLE] * 3
