"""MNIST: find, download, verify and load the four official IDX files; the lab's split.

The files are read from a directory (flag, or the ``MNIST_DIR`` environment variable, default
``data/mnist``), gzipped or not. Every file is checked before use: magic number, header counts
against the file size, MD5 of the decompressed bytes, and image/label counts. A file that fails
any check raises :class:`DataError` naming the file; we never train on corrupt data.

Missing files are downloaded from public mirrors (with retries), verified, then written
atomically. Without network the error says how to provide the files by hand.

The split is the lab's (TF1 ``read_data_sets``): the first 5,000 training images are the
validation set, the other 55,000 train; the 10,000 test images are for test only.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import struct
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client import contract

log = logging.getLogger(__name__)

VALIDATION_SIZE = 5000  # read_data_sets' default: the first 5,000 training images

# file stem -> (IDX magic number, md5 of the decompressed bytes, expected item count)
FILES = {
    "train-images-idx3-ubyte": (2051, "6bbc9ace898e44ae57da46a324031adb", 60000),
    "train-labels-idx1-ubyte": (2049, "a25bea736e30d166cdddb491f175f624", 60000),
    "t10k-images-idx3-ubyte": (2051, "2646ac647ad5339dbf082846283269ea", 10000),
    "t10k-labels-idx1-ubyte": (2049, "27ae3e4e09519cfbb04c329615203637", 10000),
}
MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)
DOWNLOAD_ATTEMPTS = 3


class DataError(RuntimeError):
    """MNIST files missing, unreachable or corrupt; the message names the file and the fix."""


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


def resolve_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: the argument, else $MNIST_DIR, else data/mnist."""
    chosen = data_dir or os.environ.get(contract.MNIST_DIR_ENV) or contract.DEFAULT_MNIST_DIR
    return Path(chosen)


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a valid gzip file ({exc}); delete it and retry") from exc


def parse_idx(data: bytes, stem: str, origin: Path | str) -> np.ndarray:
    """Check one decompressed IDX file completely and return its uint8 array."""
    magic, expected_md5, expected_count = FILES[stem]
    dims = magic & 0xFF  # 1 for labels, 3 for images
    header = 4 + 4 * dims
    if len(data) < header:
        raise DataError(f"{origin}: truncated ({len(data)} bytes, shorter than the IDX header)")
    (found_magic,) = struct.unpack(">I", data[:4])
    if found_magic != magic:
        raise DataError(f"{origin}: wrong magic number {found_magic} (expected {magic}); "
                        "is this the right file?")
    shape = struct.unpack(f">{dims}I", data[4:header])
    size = int(np.prod(shape))
    if len(data) != header + size:
        raise DataError(f"{origin}: truncated or padded: {len(data) - header} data bytes, "
                        f"header promises {size} for shape {shape}")
    if shape[0] != expected_count:
        raise DataError(f"{origin}: {shape[0]} items, expected {expected_count}")
    digest = hashlib.md5(data).hexdigest()
    if digest != expected_md5:
        raise DataError(f"{origin}: checksum mismatch (md5 {digest}, expected {expected_md5}); "
                        "the file is corrupt: delete it and download it again")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


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
    path = _find(directory, stem)
    if path is None:
        if not download:
            raise DataError(f"{directory / (stem + '.gz')}: missing; copy the official MNIST "
                            f"files there or set ${contract.MNIST_DIR_ENV}")
        path = _download(stem, directory)
    data = _read_bytes(path)
    return parse_idx(data, stem, path), FILES[stem][1]


def scale(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> float32 [N, 28, 28, 1] in [0, 1] (byte / 255, the contract's scaling)."""
    return (images.astype(np.float32) / contract.PIXEL_SCALE)[..., np.newaxis]


def load(data_dir: str | os.PathLike[str] | None = None, download: bool = True) -> Mnist:
    """Load, verify and split MNIST from ``data_dir`` (see :func:`resolve_dir`)."""
    directory = resolve_dir(data_dir)
    arrays, checksums = {}, {}
    for stem in FILES:
        arrays[stem], checksums[stem] = load_file(directory, stem, download)
    for split in ("train", "t10k"):
        n_img, n_lab = len(arrays[f"{split}-images-idx3-ubyte"]), len(arrays[f"{split}-labels-idx1-ubyte"])
        if n_img != n_lab:
            raise DataError(f"{directory}: {split} has {n_img} images but {n_lab} labels")
    train_x = scale(arrays["train-images-idx3-ubyte"])
    train_y = arrays["train-labels-idx1-ubyte"].astype(np.int64)
    return Mnist(
        train_images=train_x[VALIDATION_SIZE:],
        train_labels=train_y[VALIDATION_SIZE:],
        validation_images=train_x[:VALIDATION_SIZE],
        validation_labels=train_y[:VALIDATION_SIZE],
        test_images=scale(arrays["t10k-images-idx3-ubyte"]),
        test_labels=arrays["t10k-labels-idx1-ubyte"].astype(np.int64),
        checksums=checksums,
    )
