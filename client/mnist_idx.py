"""A small reader for the MNIST IDX files (``t10k-images-idx3-ubyte.gz`` ...), client side.

The client must not depend on the training package (which pulls in TensorFlow), so it keeps its
own reader of the format (LeCun's page: big-endian magic ``0 0 type ndim``, then ``ndim``
big-endian uint32 sizes, then the data). Used by the CLI's ``mnist:SPLIT:INDEX`` inputs and by
the Locust users, which send real MNIST test digits.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
from pathlib import Path

import numpy as np

from client import contract

SPLITS = {"train": "train", "t10k": "t10k", "test": "t10k"}  # "test" is an alias of t10k
_UBYTE = 0x08


class IdxError(ValueError):
    """A missing or malformed IDX file."""


def mnist_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The MNIST directory: the explicit one, else ``$MNIST_DIR``, else the contract's default."""
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(contract.MNIST_DIR_ENV) or contract.DEFAULT_MNIST_DIR)


def _find(directory: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        path = directory / name
        if path.is_file():
            return path
    raise IdxError(f"no {stem}[.gz] in {directory} (set --mnist-dir or ${contract.MNIST_DIR_ENV})")


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """An unsigned-byte IDX file (gzip or plain) as a uint8 array of its declared shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise IdxError(f"{path}: cannot read: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _UBYTE:
        raise IdxError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{path}: truncated header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != count:
        raise IdxError(f"{path}: holds {len(data) - header} bytes of data, shape {shape} needs {count}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


@functools.lru_cache(maxsize=4)
def load_split(split: str, directory: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28], labels uint8 [N]) of ``train`` or ``t10k`` (cached)."""
    try:
        stem = SPLITS[split]
    except KeyError:
        raise IdxError(f"unknown MNIST split {split!r}; use one of {sorted(SPLITS)}") from None
    root = mnist_dir(directory)
    images = read_idx(_find(root, f"{stem}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{stem}-labels-idx1-ubyte"))
    if images.shape[1:] != (contract.IMAGE_SIZE, contract.IMAGE_SIZE) or len(images) != len(labels):
        raise IdxError(f"{root}: {stem} images {images.shape} and labels {labels.shape} do not match")
    return images, labels


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> the contract's float32 [N, 28, 28, 1] in [0, 1] (byte / 255)."""
    return (images.astype(np.float32) / contract.PIXEL_SCALE)[..., np.newaxis]
