"""MNIST for training: download the four official IDX files if missing, load them, the lab's split.

Reading and verifying a file (magic number, header counts against the file size, MD5 of the
decompressed bytes) is the foundation's (:mod:`contract.mnist`); a file that fails a check raises
:class:`contract.mnist.DataError` naming the file, and we never train on corrupt data.

Missing files are downloaded from public mirrors (with retries), verified, then written
atomically. Without network the error says how to provide the files by hand.

The split is the lab's (TF1 ``read_data_sets``): the first 5,000 training images are the
validation set, the other 55,000 train; the 10,000 test images are for test only. A run with a
``train_limit`` trains on the first ``train_limit`` of those 55,000 (:func:`training_set`).
"""

from __future__ import annotations

import gzip
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import contract
from contract.mnist import FILES, DataError, find, mnist_dir, parse_idx, read_file, to_model_input

log = logging.getLogger(__name__)

VALIDATION_SIZE = 5000  # read_data_sets' default: the first 5,000 training images

MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)
DOWNLOAD_ATTEMPTS = 3


@dataclass(frozen=True)
class Mnist:
    """The lab's split, pixels scaled to [0, 1] as float32 [N, 28, 28, 1]; labels int64."""

    train_images: np.ndarray
    train_labels: np.ndarray
    validation_images: np.ndarray
    validation_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    checksums: dict[str, str]  # file stem -> md5 of the decompressed bytes


def _download(stem: str, directory: Path) -> Path:
    """Fetch one file from the mirrors, verify it, and move it into place atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    errors = []
    for mirror in MIRRORS:
        url = f"{mirror}{stem}.gz"
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            try:
                log.info("downloading %s (attempt %d)", url, attempt)
                with urllib.request.urlopen(url, timeout=60) as response:
                    payload = response.read()
                parse_idx(gzip.decompress(payload), stem, url)
            except (urllib.error.URLError, OSError, EOFError, DataError) as exc:
                errors.append(f"{url}: {exc}")
                time.sleep(min(2**attempt, 10))
                continue
            target = directory / f"{stem}.gz"
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{stem}.", suffix=".part")
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
            os.replace(tmp, target)
            return target
    raise DataError(
        f"cannot download {stem}.gz ({'; '.join(errors[-2:])}). Without network, copy the four "
        f"official MNIST files ({', '.join(s + '.gz' for s in FILES)}) into {directory} "
        f"or point --data-dir / ${contract.MNIST_DIR_ENV} at a directory holding them"
    )


def load_file(directory: Path, stem: str, download: bool = True) -> tuple[np.ndarray, str]:
    """One verified IDX array and the md5 of its decompressed bytes."""
    if download and find(directory, stem) is None:
        _download(stem, directory)
    return read_file(directory, stem), FILES[stem][1]


def load(data_dir: str | os.PathLike[str] | None = None, download: bool = True) -> Mnist:
    """Load, verify and split MNIST from ``data_dir`` (else $MNIST_DIR, else data/mnist)."""
    directory = mnist_dir(data_dir)
    arrays, checksums = {}, {}
    for stem in FILES:
        arrays[stem], checksums[stem] = load_file(directory, stem, download)
    train_x = to_model_input(arrays["train-images-idx3-ubyte"])
    train_y = arrays["train-labels-idx1-ubyte"].astype(np.int64)
    return Mnist(
        train_images=train_x[VALIDATION_SIZE:],
        train_labels=train_y[VALIDATION_SIZE:],
        validation_images=train_x[:VALIDATION_SIZE],
        validation_labels=train_y[:VALIDATION_SIZE],
        test_images=to_model_input(arrays["t10k-images-idx3-ubyte"]),
        test_labels=arrays["t10k-labels-idx1-ubyte"].astype(np.int64),
        checksums=checksums,
    )


def training_set(data: Mnist, train_limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels a run trains on: the training split, or its first ``train_limit``."""
    if train_limit:
        return data.train_images[:train_limit], data.train_labels[:train_limit]
    return data.train_images, data.train_labels
