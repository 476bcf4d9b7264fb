"""MNIST's IDX files: the one reader, with the official checksums, for every part of digits.

The format (LeCun's page): a big-endian magic number ``0 0 0x08 ndim``, then ``ndim`` big-endian
uint32 sizes, then the bytes. Every file is checked completely before use: magic number, header
sizes against the file's length, item count, and the MD5 of the decompressed bytes. A file that
fails a check raises :class:`DataError` naming the file and the fix; nothing trains on, or sends,
corrupt data. Files are found in a directory (argument, else ``$MNIST_DIR``, else ``data/mnist``),
gzipped or not. Training adds the download and the lab's split (``training.data``); the client and
the load tests read digits through :func:`load_split`.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np

import contract
from contract.errors import DigitsError

# file stem -> (IDX magic number, md5 of the decompressed bytes, expected item count)
FILES = {
    "train-images-idx3-ubyte": (2051, "6bbc9ace898e44ae57da46a324031adb", 60000),
    "train-labels-idx1-ubyte": (2049, "a25bea736e30d166cdddb491f175f624", 60000),
    "t10k-images-idx3-ubyte": (2051, "2646ac647ad5339dbf082846283269ea", 10000),
    "t10k-labels-idx1-ubyte": (2049, "27ae3e4e09519cfbb04c329615203637", 10000),
}
SPLITS = {"train": "train", "t10k": "t10k", "test": "t10k"}  # "test" is an alias of t10k


class DataError(DigitsError):
    """MNIST files missing, unreadable or corrupt; the message names the file and the fix."""


def mnist_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The MNIST directory: the explicit one, else ``$MNIST_DIR``, else the contract's default."""
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(contract.MNIST_DIR_ENV) or contract.DEFAULT_MNIST_DIR)


def find(directory: Path, stem: str) -> Path | None:
    """``<stem>.gz`` or ``<stem>`` in ``directory``, or None."""
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def read_bytes(path: Path) -> bytes:
    """The decompressed bytes of one file (gzip or plain)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a valid gzip file ({exc}); delete it and retry") from exc


def parse_idx(data: bytes, stem: str, origin: Path | str) -> np.ndarray:
    """Check one decompressed official IDX file completely and return its uint8 array."""
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


def read_file(directory: Path, stem: str) -> np.ndarray:
    """One verified official file of ``directory``; DataError if it is missing or corrupt."""
    path = find(directory, stem)
    if path is None:
        raise DataError(f"{directory / (stem + '.gz')}: missing; copy the official MNIST files "
                        f"there or point --mnist-dir / ${contract.MNIST_DIR_ENV} at them")
    return parse_idx(read_bytes(path), stem, path)


@functools.lru_cache(maxsize=4)
def load_split(split: str, directory: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28], labels uint8 [N]) of ``train`` or ``t10k``, verified (cached)."""
    try:
        stem = SPLITS[split]
    except KeyError:
        raise DataError(f"unknown MNIST split {split!r}; use one of {sorted(SPLITS)}") from None
    root = mnist_dir(directory)
    images = read_file(root, f"{stem}-images-idx3-ubyte")
    labels = read_file(root, f"{stem}-labels-idx1-ubyte")
    return images, labels


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> the contract's float32 [N, 28, 28, 1] in [0, 1] (byte / 255)."""
    return (images.astype(np.float32) / contract.PIXEL_SCALE)[..., np.newaxis]
