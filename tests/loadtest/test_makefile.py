"""The Makefile's MNIST_DIR: absolute whatever is given (the default, a relative path on the command
line or in the environment), and exported so that every test and subprocess reads the same files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# An extra makefile read after ours: one recipe printing the variable and the recipe's environment.
SHOW = 'show-mnist-dir:\n\t@echo "make=$(MNIST_DIR) env=$$MNIST_DIR"\n'

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _make(*argv: str, env: dict[str, str] | None = None, makefile: str = "") -> str:
    done = subprocess.run(
        ["make", "-s", "--no-print-directory", "-C", str(ROOT), *argv],
        input=makefile, cwd=ROOT.parent, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ([], ROOT / "data" / "mnist"),  # the default
        (["MNIST_DIR=../shared/data/mnist"], ROOT.parent / "shared" / "data" / "mnist"),
        (["MNIST_DIR=/already/absolute"], Path("/already/absolute")),
    ],
)
def test_mnist_dir_is_absolute_and_exported(given: list[str], expected: Path) -> None:
    env = {"PATH": "/usr/bin:/bin"}  # no MNIST_DIR from the test run's environment
    shown = _make("-f", "Makefile", "-f", "-", "show-mnist-dir", *given, env=env, makefile=SHOW)
    assert shown.split() == [f"make={expected}", f"env={expected}"]


def test_a_relative_mnist_dir_from_the_environment_is_made_absolute() -> None:
    env = {"PATH": "/usr/bin:/bin", "MNIST_DIR": "rel/mnist"}
    shown = _make("-f", "Makefile", "-f", "-", "show-mnist-dir", env=env, makefile=SHOW)
    assert shown.split() == [f"make={ROOT / 'rel' / 'mnist'}", f"env={ROOT / 'rel' / 'mnist'}"]


def test_make_test_hands_pytest_the_absolute_path() -> None:
    recipe = _make("-n", "test", "MNIST_DIR=../shared/data/mnist")
    (line,) = [line for line in recipe.splitlines() if "-m pytest" in line]
    assert line.startswith(f"MNIST_DIR={ROOT.parent / 'shared' / 'data' / 'mnist'} ")
