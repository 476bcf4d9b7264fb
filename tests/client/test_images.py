"""Preprocessing of real digit pictures into MNIST-style inputs, and the other input kinds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import contract
from client.images import FIT_BOX, load_inputs, parse_mnist_spec, preprocess
from contract.errors import InputError
from contract.mnist import load_split

SIZE = contract.IMAGE_SIZE


def _mnist_bytes(mnist_dir: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_split("t10k", str(mnist_dir))
    return images[:count], labels[:count]


def _paper_png(digit: np.ndarray, path: Path, rng: np.random.Generator, side: int = 200) -> Path:
    """An MNIST digit as a photo-like picture: black ink on white, resized, off-centre."""
    ink = Image.fromarray(255 - digit).resize((side, side), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (side + 140, side + 90), 255)
    canvas.paste(ink, (int(rng.integers(0, 140)), int(rng.integers(0, 90))))
    canvas.save(path)
    return path


def _centre_of_mass(field: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(field.shape)
    total = field.sum()
    return float((ys * field).sum() / total), float((xs * field).sum() / total)


# --- the acceptance test: same prediction as the original tensor --------------------------------
def test_photographed_mnist_digits_predict_like_the_originals(
    model_base_path: Path, mnist_test: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    import onnxruntime as ort  # tests may use it; the client package never does

    versions = contract.model_versions(model_base_path)
    model = contract.version_path(model_base_path, versions[-1]) / contract.ONNX_FILENAME
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])

    def digits(batch: np.ndarray) -> np.ndarray:
        return session.run([contract.OUTPUT_DIGIT], {contract.INPUT_NAME: batch})[0]

    images, _labels = mnist_test
    rng = np.random.default_rng(7)
    chosen = rng.choice(len(images), size=600, replace=False)
    raw = np.rint(images[chosen, :, :, 0] * contract.PIXEL_SCALE).astype(np.uint8)
    paths = [_paper_png(raw[k], tmp_path / f"{k}.png", rng) for k in range(len(chosen))]
    processed = np.stack([load_inputs(str(p))[0].pixels for p in paths])

    agreement = float(np.mean(digits(processed) == digits(images[chosen])))
    assert agreement >= 0.97, f"only {agreement:.1%} of photographed digits kept their prediction"


# --- invariants of the MNIST recipe ---------------------------------------------------------------
def test_output_is_the_contract_input_with_mnist_geometry(mnist_dir: Path, tmp_path: Path) -> None:
    digits, _ = _mnist_bytes(mnist_dir, 30)
    rng = np.random.default_rng(1)
    for k, digit in enumerate(digits):
        field = load_inputs(str(_paper_png(digit, tmp_path / f"{k}.png", rng)))[0].pixels
        assert field.shape == contract.INPUT_SHAPE and field.dtype == np.float32
        assert field.min() >= 0.0 and field.max() == pytest.approx(1.0)
        plane = field[..., 0]
        rows = np.flatnonzero(plane.max(axis=1) > 0.05)
        cols = np.flatnonzero(plane.max(axis=0) > 0.05)
        # the digit fits the 20x20 box (one pixel of anti-aliased edge allowed) ...
        assert rows[-1] - rows[0] + 1 <= FIT_BOX + 2 and cols[-1] - cols[0] + 1 <= FIT_BOX + 2
        # ... its longer side fills it ...
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 >= FIT_BOX - 2
        # ... and its centre of mass sits at the field's centre, within the integer shift
        cy, cx = _centre_of_mass(plane)
        assert abs(cy - SIZE / 2) <= 0.75 and abs(cx - SIZE / 2) <= 0.75


def test_polarity_colour_and_alpha_do_not_change_the_result(mnist_dir: Path) -> None:
    digit = _mnist_bytes(mnist_dir, 1)[0][0]
    big = Image.fromarray(digit).resize((120, 120), Image.Resampling.BICUBIC)
    light_on_dark = preprocess(big)
    dark_on_light = preprocess(Image.fromarray(255 - np.asarray(big)))
    # blue ink on yellowish paper
    rgb = np.asarray(big, dtype=np.float32)[..., None] / 255.0
    paper, ink = np.array([245, 235, 180.0]), np.array([20, 30, 160.0])
    colour = Image.fromarray((paper * (1 - rgb) + ink * rgb).astype(np.uint8), "RGB")
    coloured = preprocess(colour)
    # white strokes on a transparent canvas: the alpha channel is the ink
    rgba = np.zeros((120, 120, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = np.asarray(big)
    transparent = preprocess(Image.fromarray(rgba, "RGBA"))
    for other in (dark_on_light, coloured, transparent):
        assert np.abs(other - light_on_dark).mean() < 0.03


def test_small_noisy_photo_and_jpeg(mnist_dir: Path, tmp_path: Path) -> None:
    digit = _mnist_bytes(mnist_dir, 3)[0][2]
    rng = np.random.default_rng(3)
    clean = preprocess(Image.fromarray(255 - digit).resize((300, 300), Image.Resampling.BICUBIC))
    # grey, shaded paper with sensor noise, saved as JPEG
    picture = np.asarray(
        Image.fromarray(255 - digit).resize((300, 300), Image.Resampling.BICUBIC), np.float32
    )
    shade = np.linspace(0.85, 1.0, 300)[None, :]
    noisy = np.clip(picture * shade * 0.9 + 15 + rng.normal(0, 6, picture.shape), 0, 255)
    path = tmp_path / "photo.jpg"
    Image.fromarray(noisy.astype(np.uint8)).save(path, quality=80)
    assert np.abs(load_inputs(str(path))[0].pixels - clean).mean() < 0.05
    # a thumbnail smaller than MNIST itself is scaled up to the 20x20 box too
    tiny = tmp_path / "tiny.png"
    Image.fromarray(255 - digit).resize((14, 14), Image.Resampling.BILINEAR).save(tiny)
    small = load_inputs(str(tiny))[0].pixels
    assert small.shape == contract.INPUT_SHAPE and np.abs(small - clean).mean() < 0.08


# --- errors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"hello, I am not a picture\n", "not an image"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "cannot decode"),
    ],
)
def test_files_that_are_not_images_get_a_clear_error(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "input.png"
    path.write_bytes(content)
    with pytest.raises(InputError, match=reason) as caught:
        load_inputs(str(path))
    assert caught.value.source == str(path)


def test_blank_pictures_missing_files_and_directories(tmp_path: Path) -> None:
    Image.new("L", (64, 64), 250).save(tmp_path / "blank.png")
    with pytest.raises(InputError, match="no digit"):
        load_inputs(str(tmp_path / "blank.png"))
    with pytest.raises(InputError, match="no such file"):
        load_inputs(str(tmp_path / "missing.png"))
    with pytest.raises(InputError, match="directory"):
        load_inputs(str(tmp_path))


# --- .npy and MNIST IDX inputs -----------------------------------------------------------------------
def test_npy_arrays(mnist_dir: Path, tmp_path: Path) -> None:
    digits, _ = _mnist_bytes(mnist_dir, 3)
    np.save(tmp_path / "one.npy", digits[0])
    np.save(tmp_path / "batch.npy", digits.astype(np.float32) / contract.PIXEL_SCALE)
    np.save(tmp_path / "flat.npy", digits.reshape(3, contract.PIXELS))
    one = load_inputs(str(tmp_path / "one.npy"))
    assert len(one) == 1
    np.testing.assert_allclose(one[0].pixels[..., 0], digits[0] / contract.PIXEL_SCALE, atol=1e-7)
    batch = load_inputs(str(tmp_path / "batch.npy"))
    assert [b.source for b in batch] == [f"{tmp_path / 'batch.npy'}[{i}]" for i in range(3)]
    flat = load_inputs(str(tmp_path / "flat.npy"))
    np.testing.assert_allclose(flat[2].pixels, batch[2].pixels, atol=1e-7)

    np.save(tmp_path / "bytes_as_float.npy", digits.astype(np.float32))
    with pytest.raises(InputError, match=r"scale them to \[0, 1\]"):
        load_inputs(str(tmp_path / "bytes_as_float.npy"))
    np.save(tmp_path / "nan.npy", np.full((SIZE, SIZE), np.nan, np.float32))
    with pytest.raises(InputError, match="NaN"):
        load_inputs(str(tmp_path / "nan.npy"))
    np.save(tmp_path / "wrong.npy", np.zeros((5, 3, 3), np.float32))
    with pytest.raises(InputError, match="not an image"):
        load_inputs(str(tmp_path / "wrong.npy"))
    (tmp_path / "pickle.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(InputError, match=r"not a readable \.npy"):
        load_inputs(str(tmp_path / "pickle.npy"))


def test_mnist_specs(mnist_dir: Path) -> None:
    images, labels = _mnist_bytes(mnist_dir, 12)
    inputs = load_inputs("mnist:t10k:3-5", mnist_directory=mnist_dir)
    assert [i.source for i in inputs] == ["mnist:t10k:3", "mnist:t10k:4", "mnist:t10k:5"]
    assert [i.label for i in inputs] == labels[3:6].tolist()
    np.testing.assert_allclose(inputs[0].pixels[..., 0], images[3] / contract.PIXEL_SCALE)
    assert load_inputs("mnist:test:11", mnist_directory=mnist_dir)[0].label == labels[11]
    assert parse_mnist_spec("mnist:train:7") == ("train", [7])
    for bad, reason in [
        ("mnist:t10k", "expected mnist:SPLIT:INDEX"),
        ("mnist:t10k:x", "bad index"),
        ("mnist:t10k:5-2", "bad index"),
        ("mnist:t10k:10000", "out of range"),
        ("mnist:valid:1", "unknown MNIST split"),
    ]:
        with pytest.raises(InputError, match=reason):
            load_inputs(bad, mnist_directory=mnist_dir)


def test_mnist_dir_missing_says_how_to_set_it(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=contract.MNIST_DIR_ENV):
        load_inputs("mnist:t10k:0", mnist_directory=tmp_path)
