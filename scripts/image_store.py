"""What building the images (scripts/images.py) and smoke-testing them (scripts/images_smoke.py)
share: where their logs and summaries go, the training image's variants, the log line, and
podman's local image store (does an image exist, its size, its stored name).

Both import this module and neither imports the other at load time: `images.py smoke` imports
images_smoke.py only when it runs it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "images"  # logs and summaries (build/ is git-ignored)
TRAIN_VARIANTS = {"gpu": "", "cpu": "-cpu"}  # the training image's DEVICE build argument -> tag suffix


def log(message: str) -> None:
    print(f"[images {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(*command: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}")
    return result


def image_exists(reference: str) -> bool:
    return run("podman", "image", "exists", reference, check=False).returncode == 0


def image_size(reference: str) -> int:
    return int(run("podman", "image", "inspect", "--format", "{{.Size}}", reference).stdout.strip())


def local_image(reference: str) -> str:
    """podman stores an unqualified name under localhost/."""
    return reference if "/" in reference else f"localhost/{reference}"
