"""Several models in one worker, and workers converging on runtime changes (serving.core.control).

Each ``ModelControl`` below is one worker's end of the store; two of them on one store are two
worker processes as the server runs them (each follows the store in its own thread).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from contract import INPUT_NAME, INPUT_SHAPE
from contract.errors import DeadlineExceeded, FailedPrecondition, NotFound, PermissionDenied
from contract.types import ModelEntry
from serving.core.control import ModelControl, ModelStore
from serving.core.dataplane import DataPlane
from serving.core.models import ServedModels
from serving.core.repository import ModelRepository
from serving.settings import CONTROL_EXPLICIT, CONTROL_NONE
from tests.serving.conftest import write_model

IMAGES = {INPUT_NAME: np.zeros((2, *INPUT_SHAPE), np.float32)}


def _repository(entry: ModelEntry) -> ModelRepository:
    return ModelRepository(entry.name, entry.base_path, policy=entry.policy,
                           labels=dict(entry.labels), poll_wait_seconds=0)


@pytest.fixture
def bases(tiny_repository: Path, tmp_path: Path) -> dict[str, str]:
    """Three model repositories: a and b (version 1), c (versions 1 and 2)."""
    paths = {}
    for name in ("a", "b", "c"):
        shutil.copytree(tiny_repository, tmp_path / name)
        paths[name] = str(tmp_path / name)
    write_model(tmp_path / "c" / "2", seed=2)
    return paths


@pytest.fixture
def workers(bases: dict[str, str], tmp_path: Path) -> Iterator[list[DataPlane]]:
    """Two workers' data planes over one store serving a and b, model control explicit."""
    store = ModelStore(tmp_path / "state")
    store.initialize([ModelEntry("a", bases["a"]), ModelEntry("b", bases["b"])], "test")
    planes = []
    for worker in ("w1", "w2"):
        models = ServedModels(_repository)
        control = ModelControl(store, models, worker, mode=CONTROL_EXPLICIT, poll_seconds=0.02,
                               apply_timeout=10)
        control.start()
        planes.append(DataPlane(models, control=control))
    yield planes
    for plane in planes:
        plane.control.stop()
        plane.models.stop()


def _rows(plane: DataPlane) -> list[tuple[str, str, str]]:
    return [(r.name, r.version, r.state) for r in plane.repository_index()]


def test_every_worker_serves_every_configured_model_by_name(workers: list[DataPlane]) -> None:
    for plane in workers:
        assert plane.models.names() == ["a", "b"] and plane.ready
        assert plane.predict("b", IMAGES)[0] == 1
        with pytest.raises(NotFound, match=r"model 'z' is not served here \(served models: 'a', 'b'\)"):
            plane.predict("z", IMAGES)


def test_a_reload_answers_once_every_worker_serves_the_new_config(
    workers: list[DataPlane], bases: dict[str, str]
) -> None:
    first, second = workers
    first.reload_config([ModelEntry("a", bases["a"]), ModelEntry("c", bases["c"], "all", {"canary": 2})])
    # No waiting here: the call returned, so the other worker has applied it too.
    for plane in workers:
        assert plane.models.names() == ["a", "c"]
        assert plane.predict("c", IMAGES, label="canary")[0] == 2
        assert _rows(plane) == [("a", "1", "READY"), ("c", "1", "READY"), ("c", "2", "READY")]
    with pytest.raises(NotFound):
        second.predict("b", IMAGES)


def test_unload_and_load_reach_every_worker_and_the_index_keeps_the_unloaded_model(
    workers: list[DataPlane],
) -> None:
    first, second = workers
    second.unload_model("b")
    for plane in workers:
        assert _rows(plane) == [("a", "1", "READY"), ("b", "", "UNAVAILABLE")]
        assert [r.name for r in plane.repository_index(ready_only=True)] == ["a"]
        with pytest.raises(NotFound, match="model 'b' is unloaded"):
            plane.predict("b", IMAGES)
    first.load_model("b")
    assert all(plane.predict("b", IMAGES)[0] == 1 for plane in workers)
    with pytest.raises(NotFound, match="not in the model config"):
        first.load_model("z")


def test_a_reload_with_a_model_that_cannot_serve_says_so_and_the_others_serve(
    workers: list[DataPlane], bases: dict[str, str], tmp_path: Path
) -> None:
    first, second = workers
    with pytest.raises(FailedPrecondition, match="no version serves for empty: no version under"):
        first.reload_config([ModelEntry("a", bases["a"]), ModelEntry("empty", str(tmp_path / "none"))])
    assert second.predict("a", IMAGES)[0] == 1
    assert not second.ready  # strict readiness, as Triton's: every configured model serves
    second.strict_readiness = False
    assert second.ready  # without: any model that serves


def test_changes_are_refused_unless_model_control_is_explicit(bases: dict[str, str], tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "state")
    store.initialize([ModelEntry("a", bases["a"])], "test")
    models = ServedModels(_repository)
    control = ModelControl(store, models, "w", mode=CONTROL_NONE)
    control.sync()
    plane = DataPlane(models, control=control)
    for change in (lambda: plane.unload_model("a"), lambda: plane.load_model("a"),
                   lambda: plane.reload_config([])):
        with pytest.raises(PermissionDenied, match="--model_control_mode explicit"):
            change()
    assert _rows(plane) == [("a", "1", "READY")]  # the index stays readable
    with pytest.raises(PermissionDenied, match="models are fixed"):
        DataPlane(_repository(ModelEntry("a", bases["a"]))).unload_model("a")


def test_a_removed_model_finishes_what_it_was_asked(workers: list[DataPlane], bases: dict[str, str]) -> None:
    first, _ = workers
    held = first.resolve("b")  # a request in flight holds its version
    first.reload_config([ModelEntry("a", bases["a"])])
    assert held.run(IMAGES[INPUT_NAME])["digit"].shape == (2,)


def test_changes_made_at_once_through_two_workers_are_both_kept(workers: list[DataPlane]) -> None:
    first, second = workers
    threads = [threading.Thread(target=first.unload_model, args=("a",)),
               threading.Thread(target=second.unload_model, args=("b",))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    state = first.control.store.read()
    assert state.unloaded == {"a", "b"} and state.generation == 3


def test_a_changed_policy_reconfigures_and_a_changed_base_path_replaces(
    workers: list[DataPlane], bases: dict[str, str]
) -> None:
    first, _ = workers
    before = first.models.get("a").repository
    first.reload_config([ModelEntry("a", bases["a"], "latest:2", {"stable": 1}), ModelEntry("b", bases["c"])])
    assert first.models.get("a").repository is before and first.predict("a", IMAGES, label="stable")[0] == 1
    assert first.predict("b", IMAGES)[0] == 2  # b now serves c's versions, latest:1


def test_waiting_ignores_dead_workers_and_names_a_live_one_that_lags(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "state")
    store.initialize([], "test")
    (store.applied_dir / "gone.json").write_text(json.dumps({"generation": 0, "pid": 2**22 + 12345}))
    store.report("me", 1)
    store.wait_applied(1, timeout=1)
    (store.applied_dir / "slow.json").write_text(json.dumps({"generation": 0, "pid": os.getpid()}))
    with pytest.raises(DeadlineExceeded, match="not yet applied by workers slow"):
        store.wait_applied(1, timeout=0.2)
