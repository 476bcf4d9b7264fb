"""The devices a run trains on: logged at start, and a GPU that was asked for must be there.

A pod of the Kubernetes grid Job that asks for ``nvidia.com/gpu`` must train on that GPU. A
CPU-only image, a node without its driver or a device plugin that exposed nothing would
otherwise let TensorFlow fall back to the CPU silently: the run trains for hours on the CPU
while it holds a GPU. So every run logs what TensorFlow sees, and a run that must have a GPU
fails fast when there is none.

How a run knows it must have a GPU: ``python -m training run --require-gpu``, or the environment
variable ``DIGITS_REQUIRE_GPU=1`` (``true``/``yes`` too; ``0``/``false``/``no``/empty: not
required). The flag is for people; the variable is for manifests: the GPU overlay sets it next
to its ``nvidia.com/gpu`` limit, so the requirement travels with the request and the container's
arguments stay the same everywhere. ``--no-require-gpu`` overrides the variable. Any other value
of the variable is an error, not a guess.

The check runs before any data is read or model built (seconds after start: TensorFlow's import
is most of it). It raises :class:`DeviceError`; the CLI exits with status 2, which the Job's pod
failure policy treats as a run that no retry can fix (FailIndex).

``mixed_precision = true`` (a RunConfig field) needs a GPU as well: on a CPU, Keras' float16
compute is emulated and far slower than float32 (docs/training.md gives the measurement), so
such a run is refused with the same error rather than crawl.

On a GPU, :func:`setup` turns on memory growth: TensorFlow otherwise reserves the whole GPU's
memory in the first process, and a second run on the same GPU (``grid --jobs 2`` on a
workstation) could not start.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import tensorflow as tf

log = logging.getLogger(__name__)

REQUIRE_GPU_ENV = "DIGITS_REQUIRE_GPU"
_TRUE, _FALSE = ("1", "true", "yes"), ("", "0", "false", "no")


class DeviceError(RuntimeError):
    """The devices cannot run this run as asked (a GPU required but absent)."""


@dataclass(frozen=True)
class Device:
    """One device TensorFlow sees: ``GPU:0`` and what it is."""

    kind: str  # CPU | GPU
    name: str  # CPU:0, GPU:0 (TensorFlow's, without /physical_device:)
    description: str  # the card's name and compute capability; the CPU's model

    def __str__(self) -> str:
        return f"{self.name} ({self.description})" if self.description else self.name


def gpu_required(flag: bool | None, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this run must have a GPU: the flag if given, else $DIGITS_REQUIRE_GPU."""
    if flag is not None:
        return flag
    value = environ.get(REQUIRE_GPU_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise DeviceError(f"{REQUIRE_GPU_ENV}={environ[REQUIRE_GPU_ENV]!r}: expected 1/true/yes "
                      "(a GPU is required) or 0/false/no/empty")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{os.cpu_count()} cores"


def _describe(device: tf.config.PhysicalDevice) -> Device:
    name = device.name.removeprefix("/physical_device:")
    if device.device_type == "CPU":
        return Device("CPU", name, _cpu_model())
    details = tf.config.experimental.get_device_details(device)
    text = details.get("device_name", "")
    capability = details.get("compute_capability")
    if capability:
        text += f", compute capability {capability[0]}.{capability[1]}"
    return Device(device.device_type, name, text)


def current() -> list[Device]:
    """The devices TensorFlow sees (CPU first)."""
    return [_describe(d) for d in tf.config.list_physical_devices()]


def setup() -> list[Device]:
    """The devices TensorFlow sees, logged; memory growth on for every GPU.

    Call before TensorFlow runs anything (memory growth cannot change afterwards).
    """
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
    found = current()
    log.info("devices TensorFlow sees: %s", "; ".join(map(str, found)))
    if not has_gpu(found):
        log.info("no GPU (%s)", _why_no_gpu())
    return found


def has_gpu(devices: list[Device]) -> bool:
    return any(d.kind == "GPU" for d in devices)


def _why_no_gpu() -> str:
    """What to look at when TensorFlow sees no GPU (the usual causes, as facts)."""
    facts = ["TensorFlow is " + ("a CUDA build" if tf.test.is_built_with_cuda()
                                 else "a CPU-only build (no CUDA in this image)")]
    if tf.test.is_built_with_cuda():
        cuda_libraries = importlib.util.find_spec("nvidia") is not None
        facts.append("CUDA libraries (pip nvidia-*) " + ("installed" if cuda_libraries
                                                          else "not installed"))
    for variable in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        if variable in os.environ:
            facts.append(f"{variable}={os.environ[variable]!r}")
    facts.append("/dev/nvidia0 " + ("present" if os.path.exists("/dev/nvidia0") else "absent"))
    return "; ".join(facts)


def check(devices: list[Device], *, require_gpu: bool, mixed_precision: bool) -> None:
    """Raise :class:`DeviceError` when the run needs a GPU that TensorFlow does not see."""
    if has_gpu(devices):
        return
    seen = ", ".join(map(str, devices)) or "nothing"
    if require_gpu:
        raise DeviceError(
            f"a GPU is required ({REQUIRE_GPU_ENV}=1 or --require-gpu) but TensorFlow sees "
            f"none: {seen}. {_why_no_gpu()}. Use the GPU training image on a node whose GPU "
            "the device plugin exposes, or drop the requirement to train on the CPU.")
    if mixed_precision:
        raise DeviceError(
            f"mixed_precision = true needs a GPU, and TensorFlow sees none ({seen}): float16 "
            "on a CPU is emulated, far slower than float32 (docs/training.md). Run it on a GPU, or with "
            "--set mixed_precision=false.")
