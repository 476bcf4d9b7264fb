"""Optional server-side batching inside one worker process (``--enable_batching``).

Concurrent requests for the same model version are merged into one ONNX Runtime run of at most
``max_batch_size`` images, waiting at most ``batch_timeout_micros`` for a batch to fill. The
queue is bounded (``max_enqueued_batches`` x ``max_batch_size`` images): a request that would go
past it is refused at once with RESOURCE_EXHAUSTED (HTTP 429) instead of buffering without
limit. A request whose deadline passes while queued gets DEADLINE_EXCEEDED; its slot is skipped.

On CPU a batch of N costs about N single runs, so batching mostly adds the wait; measure before
turning it on (docs/serving.md has our figures).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from contract.errors import DeadlineExceeded, ResourceExhausted, ServingError, Unavailable
from serving.runtime import LoadedModel

logger = logging.getLogger(__name__)


class _Task:
    __slots__ = ("model", "images", "done", "result", "error", "abandoned")

    def __init__(self, model: LoadedModel, images: np.ndarray) -> None:
        self.model = model
        self.images = images
        self.done = threading.Event()
        self.result: dict[str, np.ndarray] | None = None
        self.error: BaseException | None = None
        self.abandoned = False


class Batcher:
    """A bounded queue and one thread that runs merged batches."""

    def __init__(
        self,
        max_batch_size: int,
        batch_timeout_micros: int,
        max_enqueued_batches: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.timeout = batch_timeout_micros / 1e6
        self.capacity = max_batch_size * max_enqueued_batches
        self._on_batch = on_batch or (lambda size: None)
        self._queue: deque[_Task] = deque()
        self._queued_images = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self._thread.start()

    def run(
        self, model: LoadedModel, images: np.ndarray, timeout: float | None
    ) -> dict[str, np.ndarray]:
        """Outputs for ``images`` on ``model``, computed as part of a merged batch."""
        task = _Task(model, images)
        count = len(images)
        with self._cond:
            if self._closed:
                raise Unavailable("server is shutting down")
            if self._queued_images + count > self.capacity and self._queued_images > 0:
                raise ResourceExhausted(
                    f"batch queue full ({self._queued_images} images waiting, limit "
                    f"{self.capacity}); retry later or add replicas"
                )
            self._queue.append(task)
            self._queued_images += count
            self._cond.notify()
        if not task.done.wait(timeout):
            task.abandoned = True
            raise DeadlineExceeded("deadline exceeded while waiting in the batch queue")
        if task.error is not None:
            raise task.error
        assert task.result is not None
        return task.result

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _take_batch(self) -> list[_Task] | None:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._queue.popleft()
            batch, size = [first], len(first.images)
            deadline = time.monotonic() + self.timeout
            while size < self.max_batch_size:
                if self._queue:
                    head = self._queue[0]
                    # Versions are never mixed in one run; a too-large head waits for the next.
                    if (
                        head.model is not first.model
                        or size + len(head.images) > self.max_batch_size
                    ):
                        break
                    batch.append(self._queue.popleft())
                    size += len(head.images)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            self._queued_images -= size
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            live = [t for t in batch if not t.abandoned]
            if not live:
                continue
            try:
                images = (
                    live[0].images if len(live) == 1 else np.concatenate([t.images for t in live])
                )
                outputs = live[0].model.run(images)
                self._on_batch(len(images))
                start = 0
                for task in live:
                    end = start + len(task.images)
                    task.result = {name: value[start:end] for name, value in outputs.items()}
                    start = end
            except ServingError as exc:
                for task in live:
                    task.error = exc
            except Exception as exc:  # surfaced to each waiting request as INTERNAL
                logger.exception("batched model run failed")
                for task in live:
                    task.error = exc
            for task in live:
                task.done.set()
