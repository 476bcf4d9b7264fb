"""Pinning workers to CPUs (``serving.process.placement``): slots by lock, every thread pinned."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from pathlib import Path

import pytest

from serving.process.placement import claim_slot, pin_process, pin_worker


def test_each_live_claim_gets_its_own_slot_and_a_released_slot_is_taken_again(tmp_path: Path) -> None:
    first, fd0 = claim_slot(tmp_path, "rest")
    second, fd1 = claim_slot(tmp_path, "rest")
    other_role, fd2 = claim_slot(tmp_path, "grpc")
    assert (first, second, other_role) == (0, 1, 0)
    os.close(fd0)  # worker 0 died: its lock went with it
    again, fd3 = claim_slot(tmp_path, "rest")
    assert again == 0
    assert claim_slot(tmp_path, "rest")[0] == 2
    for fd in (fd1, fd2, fd3):
        os.close(fd)


def _pinned_threads(cpu: int, queue: multiprocessing.Queue) -> None:
    """In a child: a thread started before the pin and one after; every thread's CPUs."""
    before_started, stop = threading.Event(), threading.Event()
    before = threading.Thread(target=lambda: (before_started.set(), stop.wait()))
    before.start()
    before_started.wait()
    pin_process(cpu)
    after = threading.Thread(target=stop.wait)
    after.start()
    queue.put([sorted(os.sched_getaffinity(int(task))) for task in os.listdir("/proc/self/task")])
    stop.set()
    before.join()
    after.join()


def test_every_thread_is_pinned_also_those_started_before() -> None:
    cpu = max(os.sched_getaffinity(0))
    queue: multiprocessing.Queue = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(target=_pinned_threads, args=(cpu, queue))
    child.start()
    affinities = queue.get(timeout=30)
    child.join(30)
    # The main thread and ours at least (libraries may start their own after a fork): all pinned.
    assert len(affinities) >= 3 and all(cpus == [cpu] for cpus in affinities), affinities


def _pin_as_worker(state_dir: str, queue: multiprocessing.Queue, done: threading.Event) -> None:
    queue.put((pin_worker(state_dir, "grpc"), sorted(os.sched_getaffinity(0))))
    done.wait(30)  # hold the slot until the test is done


def test_workers_take_the_allowed_cpus_in_turn(tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    context = multiprocessing.get_context("fork")
    queue, done = context.Queue(), context.Event()
    children = [
        context.Process(target=_pin_as_worker, args=(str(tmp_path), queue, done))
        for _ in range(len(cpus) + 1)
    ]
    placed = []
    for child in children:
        child.start()
        placed.append(queue.get(timeout=30))  # one after the other: slots 0, 1, ...
    done.set()
    for child in children:
        child.join(30)
    expected = [cpus[i % len(cpus)] for i in range(len(cpus) + 1)]  # one more worker than CPUs
    assert placed == [(cpu, [cpu]) for cpu in expected]


def test_a_worker_the_system_will_not_pin_serves_unpinned_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(pid: int, cpus: set[int]) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setaffinity", refuse)
    with caplog.at_level(logging.WARNING, logger="serving.process.placement"):
        assert pin_worker(tmp_path, "rest") is None
    assert "could not be pinned" in caplog.text and "Operation not permitted" in caplog.text
