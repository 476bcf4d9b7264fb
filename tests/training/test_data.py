"""MNIST loading: the real files, the lab's split, and refusal of anything corrupt."""

from __future__ import annotations

import gzip
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from training import data

TRAIN_IMAGES = "train-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"


def test_real_mnist_split_and_scaling(mnist):
    assert mnist.train_images.shape == (55000, 28, 28, 1)
    assert mnist.validation_images.shape == (5000, 28, 28, 1)
    assert mnist.test_images.shape == (10000, 28, 28, 1)
    assert mnist.train_images.dtype == np.float32
    assert 0.0 == mnist.train_images.min() and mnist.train_images.max() == 1.0
    # Class counts of the official files (../shared/data/README.md).
    train_counts = np.bincount(np.concatenate([mnist.validation_labels, mnist.train_labels]))
    assert train_counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(mnist.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958,
                                                       1028, 974, 1009]
    # Mean pixel of the training file: 33.318 / 255.
    full = np.concatenate([mnist.validation_images, mnist.train_images])
    assert abs(full.mean() * 255 - 33.318) < 1e-3


def test_validation_is_the_first_5000_training_images(mnist_dir):
    raw, _ = data.load_file(mnist_dir, TRAIN_IMAGES, download=False)
    split = data.load(mnist_dir, download=False)
    np.testing.assert_array_equal(split.validation_images[..., 0], raw[:5000] / np.float32(255))
    np.testing.assert_array_equal(split.train_images[0, ..., 0], raw[5000] / np.float32(255))


@pytest.fixture
def copy_of_mnist(mnist_dir, tmp_path) -> Path:
    for path in mnist_dir.iterdir():
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def _rewrite(directory: Path, stem: str, mutate) -> None:
    path = directory / f"{stem}.gz"
    payload = mutate(bytearray(gzip.decompress(path.read_bytes())))
    path.write_bytes(gzip.compress(bytes(payload)))


@pytest.mark.parametrize(
    ("stem", "mutate", "message"),
    [
        (TEST_LABELS, lambda b: b[:-100], "truncated"),
        (TEST_LABELS, lambda b: b[:6], "truncated"),
        (TEST_LABELS, lambda b: b"\x00\x00\x08\x03" + b[4:], "wrong magic number"),
        (TEST_LABELS, lambda b: b[:8] + bytes([(b[8] + 1) % 10]) + b[9:], "checksum mismatch"),
    ],
    ids=["truncated", "header-only", "wrong-magic", "one-label-changed"],
)
def test_corrupt_file_is_rejected_by_name(copy_of_mnist, stem, mutate, message):
    _rewrite(copy_of_mnist, stem, mutate)
    with pytest.raises(data.DataError, match=message) as info:
        data.load(copy_of_mnist, download=False)
    assert stem in str(info.value)


def test_not_gzip_is_rejected(copy_of_mnist):
    (copy_of_mnist / f"{TEST_LABELS}.gz").write_bytes(b"this is not gzip")
    with pytest.raises(data.DataError, match="not a valid gzip"):
        data.load(copy_of_mnist, download=False)


def test_uncompressed_files_are_accepted(copy_of_mnist):
    path = copy_of_mnist / f"{TEST_LABELS}.gz"
    (copy_of_mnist / TEST_LABELS).write_bytes(gzip.decompress(path.read_bytes()))
    path.unlink()
    assert len(data.load(copy_of_mnist, download=False).test_labels) == 10000


def test_offline_download_says_how_to_provide_the_files(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    monkeypatch.setattr(data.time, "sleep", lambda s: None)
    with pytest.raises(data.DataError, match="Without network, copy the four official") as info:
        data.load(tmp_path / "empty")
    assert "MNIST_DIR" in str(info.value)
    assert not list((tmp_path / "empty").glob("*.gz"))  # nothing half-written left behind


def test_download_verifies_and_writes_atomically(mnist_dir, tmp_path, monkeypatch):
    served = []

    class Response:
        def __init__(self, payload: bytes):
            self.payload = payload

        def read(self) -> bytes:
            return self.payload

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def fake_urlopen(url, timeout):
        served.append(url)
        name = url.rsplit("/", 1)[1]
        payload = (mnist_dir / name).read_bytes()
        if len(served) == 1:  # the first answer is corrupt: it must be refused and retried
            payload = gzip.compress(gzip.decompress(payload)[:-1])
        return Response(payload)

    monkeypatch.setattr(data.urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setattr(data.time, "sleep", lambda s: None)
    target = tmp_path / "dl"
    split = data.load(target)
    assert len(split.test_labels) == 10000
    assert len(served) == 5  # four files, one of them twice
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{s}.gz" for s in data.FILES)
