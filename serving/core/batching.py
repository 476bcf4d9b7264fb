"""Optional server-side batching inside one worker process (``--enable_batching``).

How a batch is cut (continuous batching, as Triton's dynamic batcher with no queue delay):

- At most one batch runs per worker at a time (one ONNX Runtime intra-op thread per worker).
- A request that finds the model idle runs at once, in its own thread, as a batch of itself
  plus whatever has queued since: an idle server never waits for companions.
- A request that finds the model busy joins the queue. When the running batch finishes, its
  runner hands the model to the oldest queued request, which cuts the next batch from the queue
  (same model version, up to ``max_batch_size`` images; the rest stay queued, oldest first) and
  runs it. So requests that arrive while a batch runs join the next one, and under load the
  batches grow by themselves. ``batch_timeout_micros`` is never waited out: TF Serving's flag is
  accepted, but nothing here holds a batch back to fill it.
- A request of more than ``max_batch_size`` images is never merged; it runs as a batch of its own.
- The queue is bounded (``max_enqueued_batches`` x ``max_batch_size`` images): a request that
  would go past it is refused at once with RESOURCE_EXHAUSTED (HTTP 429), never buffered.
- A request's deadline is honoured: if it expires while queued the request gets
  DEADLINE_EXCEEDED and is never run. No deadline, or one too far away to wait for (gRPC's
  "infinite" one), means none.

There is no batching thread: the threads of the requests themselves take turns running batches,
so a lone request pays no hand-off, and a worker needs several request threads (gRPC's
``--grpc_max_threads``, REST's ``--rest_api_num_threads``) for two requests ever to meet.
Each caller gets exactly its own rows of the merged outputs back. A lone request pays only a lock
taken twice; merging pays only as far as the model's run is a large share of a request's time
(ONNX Runtime's per-image cost falls with the batch).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from contract.errors import DeadlineExceeded, ResourceExhausted, ServingError, Unavailable
from serving.core.runtime import LoadedModel
from serving.settings import Settings

logger = logging.getLogger(__name__)

# Deadlines further away than this are no deadline (gRPC reports ~1e10 s when a call has none;
# threading's waits overflow on such values).
NO_DEADLINE_BEYOND_S = 365 * 24 * 3600.0

_QUEUED, _LEAD, _TAKEN, _DONE = range(4)


def deadline_after(timeout: float | None) -> float | None:
    """The ``time.monotonic()`` deadline ``timeout`` seconds from now; None for no deadline."""
    if timeout is None or timeout >= NO_DEADLINE_BEYOND_S:
        return None
    return time.monotonic() + timeout


class _Task:
    """One request: its images, its deadline, and where its outputs (or error) land."""

    __slots__ = ("model", "images", "deadline", "state", "wake", "result", "error")

    def __init__(self, model: LoadedModel, images: np.ndarray, deadline: float | None) -> None:
        self.model = model
        self.images = images
        self.deadline = deadline
        self.state = _QUEUED
        self.wake: threading.Event | None = None
        self.result: dict[str, np.ndarray] | None = None
        self.error: BaseException | None = None

    def finish(self, result: dict[str, np.ndarray] | None, error: BaseException | None) -> None:
        self.result, self.error, self.state = result, error, _DONE
        if self.wake is not None:
            self.wake.set()


class Batcher:
    """A bounded queue of requests; the requests' own threads take turns running merged batches."""

    def __init__(
        self,
        max_batch_size: int = Settings.max_batch_size,
        batch_timeout_micros: int = Settings.batch_timeout_micros,
        max_enqueued_batches: int = Settings.max_enqueued_batches,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.max_batch_size = max_batch_size
        # Accepted for TF Serving's flag; a batch is cut as soon as the model is free (see above).
        self.batch_timeout_micros = batch_timeout_micros
        self.capacity = max_batch_size * max_enqueued_batches
        self._on_batch = on_batch or (lambda size: None)
        self._lock = threading.Lock()
        self._queue: deque[_Task] = deque()
        self._queued_images = 0
        self._busy = False  # a batch is being cut or run; while False the queue is empty
        self._closed = False

    @property
    def queued_images(self) -> int:
        """Images waiting in the queue (not those of the batch running)."""
        return self._queued_images

    def run(
        self, model: LoadedModel, images: np.ndarray, timeout: float | None
    ) -> dict[str, np.ndarray]:
        """Outputs for ``images`` on ``model``, computed as part of a merged batch."""
        task = _Task(model, images, deadline_after(timeout))
        count = len(images)
        with self._lock:
            if self._closed:
                raise Unavailable("server is shutting down")
            if not self._busy:
                self._busy = True
                task.state = _LEAD
            else:
                if self._queued_images + count > self.capacity and self._queued_images > 0:
                    raise ResourceExhausted(
                        f"batch queue full ({self._queued_images} images waiting, limit "
                        f"{self.capacity}); retry later or add replicas"
                    )
                task.wake = threading.Event()
                self._queue.append(task)
                self._queued_images += count
        if task.state != _LEAD:
            self._wait(task)
        if task.state == _LEAD:
            self._lead(task)
        if task.error is not None:
            raise task.error
        assert task.result is not None
        return task.result

    def close(self) -> None:
        """Refuse new requests (UNAVAILABLE); those already queued still run."""
        with self._lock:
            self._closed = True

    # --- inside ----------------------------------------------------------------------------
    def _wait(self, task: _Task) -> None:
        """Until the task is done or must lead; DEADLINE_EXCEEDED if it expires queued."""
        assert task.wake is not None
        remaining = None if task.deadline is None else task.deadline - time.monotonic()
        if task.wake.wait(remaining):
            return
        with self._lock:
            if task.state == _QUEUED:
                self._queue.remove(task)
                self._queued_images -= len(task.images)
                raise DeadlineExceeded("deadline exceeded while waiting in the batch queue")
            taken = task.state == _TAKEN
        if taken:  # it started before its deadline; the caller no longer waits for it
            raise DeadlineExceeded("deadline exceeded while its batch ran")
        # _LEAD (handed the model just as it expired: it must still run the batch) or _DONE.

    def _lead(self, leader: _Task) -> None:
        """Cut a batch around ``leader``, run it, then hand the model to the oldest waiter."""
        batch: list[_Task] = []
        try:
            with self._lock:
                batch = self._cut(leader)
            if batch:
                self._execute(batch)
        finally:
            for task in batch:  # only if _execute itself failed: nobody may wait forever
                if task.state != _DONE:
                    task.finish(None, Unavailable("batch aborted"))
            with self._lock:
                successor = self._queue.popleft() if self._queue else None
                if successor is None:
                    self._busy = False
                else:
                    self._queued_images -= len(successor.images)
                    successor.state = _LEAD
            if successor is not None:
                assert successor.wake is not None
                successor.wake.set()

    def _cut(self, leader: _Task) -> list[_Task]:
        """The next batch: the leader and queued requests of its model that fit (lock held)."""
        now = time.monotonic()
        batch: list[_Task] = []
        size = 0
        if leader.deadline is not None and leader.deadline <= now:
            leader.error = DeadlineExceeded("deadline exceeded while waiting in the batch queue")
            leader.state = _DONE
        else:
            batch.append(leader)
            size = len(leader.images)
        if not self._queue:  # the lone request on an idle model
            return batch
        kept: deque[_Task] = deque()
        while self._queue and size < self.max_batch_size:
            task = self._queue.popleft()
            count = len(task.images)
            if task.deadline is not None and task.deadline <= now:
                self._queued_images -= count
                task.finish(None, DeadlineExceeded("deadline exceeded in the batch queue"))
            elif task.model is leader.model and size + count <= self.max_batch_size:
                self._queued_images -= count
                task.state = _TAKEN
                batch.append(task)
                size += count
            else:  # another version, or too big for what is left: keeps its place
                kept.append(task)
        kept.extend(self._queue)
        self._queue = kept
        return batch

    def _execute(self, batch: list[_Task]) -> None:
        """One model run for the whole batch; each task gets its own rows (or the error)."""
        try:
            images = (
                batch[0].images if len(batch) == 1 else np.concatenate([t.images for t in batch])
            )
            outputs = batch[0].model.run(images)
            self._on_batch(len(images))
        except ServingError as exc:
            for task in batch:
                task.finish(None, exc)
            return
        except Exception as exc:  # surfaced to each request of the batch as INTERNAL
            logger.exception("batched model run failed")
            for task in batch:
                task.finish(None, exc)
            return
        start = 0
        for task in batch:
            end = start + len(task.images)
            task.finish({name: value[start:end] for name, value in outputs.items()}, None)
            start = end
