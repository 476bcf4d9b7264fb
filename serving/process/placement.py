"""Pinning each worker process to one CPU (``--cpu_affinity``).

A request crosses threads about ten times inside a worker (grpcio's completion-queue poller and
its thread pool; granian's runtime and the event loop), and on a virtual machine every wake-up
of a thread that sleeps on another core is an inter-processor interrupt, with the request's
working set then cold in that core's caches. Pinned, a worker's threads hand each request to
each other on one core. What it saves is measured in docs/performance.md.

Worker ``i`` of each role (REST, gRPC) takes CPU ``i`` of the CPUs this process may run on
(``os.sched_getaffinity``: the container's cpuset), modulo their number: with ``--num_workers``
equal to the CPUs, REST worker ``i`` and gRPC worker ``i`` share CPU ``i``. A worker claims its
slot ``i`` by an exclusive ``flock`` on ``<state dir>/cpu/<role>-<i>`` that it holds for its life,
so a respawned worker takes the slot its dead predecessor left, whichever it was.

For CPUs the server has to itself (a Kubernetes pod with exclusive CPUs: the static CPU manager
policy, a Guaranteed pod with whole CPUs). On shared CPUs a pinned worker cannot move to an idle
core when another process takes its own, so it stays off by default.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

_held: list[int] = []  # the claimed slots' descriptors: the lock lives as long as the process


def claim_slot(directory: Path, role: str) -> tuple[int, int]:
    """(slot, descriptor): the lowest slot of ``role`` no live process holds, locked until the
    descriptor is closed (at the latest when this process ends)."""
    directory.mkdir(parents=True, exist_ok=True)
    slot = 0
    while True:
        fd = os.open(directory / f"{role}-{slot}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            slot += 1
            continue
        return slot, fd


def pin_process(cpu: int) -> None:
    """Pin every thread of this process to ``cpu`` (threads started later inherit it)."""
    for task in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(task), {cpu})
        except ProcessLookupError:  # a thread that ended meanwhile
            pass


def pin_worker(state_dir: str | Path, role: str) -> int | None:
    """Claim this worker's slot and pin the process to its CPU; returns the CPU, or None when
    the system refuses the pinning (the worker then serves unpinned, with a warning: a worker
    that cannot pin itself still serves)."""
    cpus = sorted(os.sched_getaffinity(0))
    slot, fd = claim_slot(Path(state_dir) / "cpu", role)
    _held.append(fd)
    cpu = cpus[slot % len(cpus)]
    try:
        pin_process(cpu)
    except OSError as exc:
        logger.warning("%s worker %d could not be pinned to CPU %d (%s); it runs on CPUs %s",
                       role, slot, cpu, exc, cpus)
        return None
    logger.info("%s worker %d pinned to CPU %d (of CPUs %s)", role, slot, cpu, cpus)
    return cpu
