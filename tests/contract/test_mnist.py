"""The one MNIST reader: official files verified completely, bad ones refused by name."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest

from contract import mnist


def test_load_split_reads_and_verifies_the_official_files(mnist_dir):
    images, labels = mnist.load_split("t10k", str(mnist_dir))
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10_000,) and set(np.unique(labels)) == set(range(10))
    assert mnist.load_split("test", str(mnist_dir))[0] is not None  # alias of t10k
    batch = mnist.to_model_input(images[:2])
    assert batch.shape == (2, 28, 28, 1) and batch.dtype == np.float32 and batch.max() <= 1.0


def test_a_corrupt_or_missing_file_is_refused_by_name(mnist_dir, tmp_path):
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        source = mnist.find(mnist_dir, stem)
        shutil.copy(source, tmp_path / source.name)
    labels = mnist.find(tmp_path, "t10k-labels-idx1-ubyte")
    data = bytearray(mnist.read_bytes(labels))
    data[-1] = (data[-1] + 1) % 10  # one label changed: sizes fine, checksum not
    labels.unlink()
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(bytes(data))
    with pytest.raises(mnist.DataError, match=r"t10k-labels-idx1-ubyte: checksum mismatch"):
        mnist.load_split.__wrapped__("t10k", str(tmp_path))
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(mnist.DataError, match="t10k-labels-idx1-ubyte.gz: missing"):
        mnist.load_split.__wrapped__("t10k", str(tmp_path))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08"))
    with pytest.raises(mnist.DataError, match="truncated"):
        mnist.load_split.__wrapped__("t10k", str(tmp_path))
    with pytest.raises(mnist.DataError, match="unknown MNIST split"):
        mnist.load_split("validation", str(mnist_dir))
