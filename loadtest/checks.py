"""The inputs every harness takes, and what they refuse: MNIST files they cannot read, and a
scenario that answered nothing.

- :func:`add_common_arguments`: ``--mnist-dir``, ``--timeout`` and ``--out``, declared once.
- :func:`model_names`: ``--model-name``'s comma-separated list of the models a run addresses.

- :func:`mnist_dir` runs before any server or load starts: the directory (``--mnist-dir``, else
  ``$MNIST_DIR``, else the contract's default) made absolute, so Locust's processes and the
  servers, whatever their working directory, read the same files, and its test split read and
  verified by the foundation's reader (:func:`contract.mnist.load_split`). A directory that fails
  is a :class:`ValueError` naming the absolute path: a bad command line, exit 2.
- :class:`NoRequests`: a scenario whose generator got no answer at all. Its figures would be NaN
  and its plot empty, so it is an error (exit 6) that names the scenario and the likely cause.
"""

from __future__ import annotations

from argparse import ArgumentParser
from argparse import _ArgumentGroup as ArgumentGroup
from pathlib import Path

import contract
from client.base import DEFAULT_TIMEOUT_S
from contract.errors import DigitsError
from contract.mnist import DataError, load_split
from contract.mnist import mnist_dir as default_mnist_dir

WHERE = f"--mnist-dir, else ${contract.MNIST_DIR_ENV}, else {contract.DEFAULT_MNIST_DIR}"


def add_common_arguments(load: ArgumentGroup, parser: ArgumentParser, out: str) -> None:
    """The data, per-request timeout and report directory (default ``out``) options."""
    load.add_argument("--mnist-dir", help=f"MNIST IDX directory (default ${contract.MNIST_DIR_ENV})")
    load.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per request (default %(default)g)"
    )
    parser.add_argument("--out", default=out, help="report directory (default %(default)s)")


def model_names(text: str) -> list[str]:
    """``"lenet5, lenet5-ensemble"`` -> ``["lenet5", "lenet5-ensemble"]``: each named once, in order;
    ValueError when none is named."""
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        raise ValueError(f"--model-name needs at least one model name, got {text!r}")
    return names


def mnist_dir(explicit: str | None) -> str:
    """The MNIST directory as an absolute path, its test split verified; ValueError if unusable."""
    directory = default_mnist_dir(explicit).expanduser().resolve()
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise ValueError(f"MNIST directory {directory} {what} ({WHERE})")
    try:
        load_split("t10k", str(directory))  # every check of the reader; cached for the harness
    except DataError as exc:
        raise ValueError(f"MNIST directory {directory} cannot be used: {exc}") from None
    return str(directory)


class NoRequests(DigitsError):
    """A scenario that answered no request: the run stops, naming it, before any NaN is reported."""

    def __init__(self, scenario: str, seconds: float, cause: str, log: Path | None = None) -> None:
        where = f"; its log {log}" if log else ""
        super().__init__(f"{scenario}: 0 requests answered in {seconds:g} s; likely cause: {cause}{where}")
