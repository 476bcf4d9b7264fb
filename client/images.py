"""Inputs for the model: real digit pictures made MNIST-like, ``.npy`` arrays, MNIST IDX digits.

MNIST's own recipe (LeCun et al.): the digit is grey, ink bright on black; its bounding box is
scaled to fit a 20x20 box keeping the aspect ratio (anti-aliased, hence grey levels); it is placed
in a 28x28 field so that its centre of mass sits at the centre; pixels are byte / 255. A photo or
scan of a digit goes through the same steps here (:func:`preprocess`), after finding which way
round the ink is and stretching its contrast, so the served model sees what it was trained on.

Input specs understood by :func:`load_inputs` (the CLI's FILE arguments):
  ``photo.png`` / ``.jpg`` / any format Pillow reads   one digit, any size, either polarity
  ``digits.npy``    [28,28], [28,28,1], [784] or N of those (uint8 0..255 or float in [0,1]);
                    a 2-D array of another size is treated as a picture and preprocessed
  ``mnist:t10k:123`` or ``mnist:test:0-9`` or ``mnist:train:5``   digits from the IDX files
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

import contract
from contract.errors import InputError
from contract.mnist import DataError, load_split, to_model_input

log = logging.getLogger(__name__)

FIT_BOX = 20  # MNIST scaled each digit to fit a 20x20 box inside the 28x28 field
# MNIST shifted each digit by whole pixels so that its centre of mass sits at the field's centre,
# so the target is the field's half size.
CENTRE = contract.IMAGE_SIZE / 2
MAX_SIDE = 1024  # larger pictures are reduced first: the digit ends up 20 px anyway
MIN_CONTRAST = 0.15  # ink vs paper difference below this (in [0,1] grey) is "no digit"
MNIST_PREFIX = "mnist:"


@dataclass(frozen=True)
class InputImage:
    """One model input: where it came from, its pixels [28, 28, 1] in [0, 1], its label if known."""

    source: str
    pixels: np.ndarray
    label: int | None = None


# --- preprocessing -------------------------------------------------------------------------------
def _otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of grey values in [0, 1] (the split maximising between-class variance)."""
    hist, edges = np.histogram(values, bins=64, range=(0.0, 1.0))
    weights = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(weights)
    w1 = w0[-1] - w0
    m0 = np.cumsum(weights * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean0 = m0 / w0
        mean1 = (m0[-1] - m0) / w1
        between = w0 * w1 * (mean0 - mean1) ** 2
    between = np.nan_to_num(between)
    return float(edges[int(np.argmax(between)) + 1])


def ink_image(image: Image.Image) -> np.ndarray:
    """A picture as float32 grey [H, W] in [0, 1], ink bright on black, contrast stretched."""
    image = ImageOps.exif_transpose(image)  # phone photos carry their rotation in EXIF
    if max(image.size) > MAX_SIDE:
        image = image.copy()
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        alpha = np.asarray(image.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
        if alpha.min() < 0.5 < alpha.max():
            # A digit drawn on a transparent canvas: the opaque strokes are the ink, whatever
            # their colour (white ink on transparent would vanish if composited on white).
            return _stretched(alpha, background=0.0)
    grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    return _stretched(grey, background=None)


def _stretched(grey: np.ndarray, background: float | None) -> np.ndarray:
    """Ink bright on black, paper at 0 and the strongest ink at 1."""
    if grey.size == 0:
        raise ValueError("the picture has no pixels")
    if background is None:
        # The paper is what the border shows: its median is robust to strokes touching the edge.
        band = max(1, min(grey.shape) // 50)
        border = np.concatenate(
            [
                grey[:band].ravel(),
                grey[-band:].ravel(),
                grey[:, :band].ravel(),
                grey[:, -band:].ravel(),
            ]
        )
        background = float(np.median(border))
        if background > 0.5:  # light paper, dark ink: MNIST wants ink bright on black
            grey = 1.0 - grey
            background = 1.0 - background
    # The strongest ink after a 3x3 median filter, so one hot pixel of sensor noise is not "ink".
    denoised = np.asarray(Image.fromarray(grey.astype(np.float32)).filter(ImageFilter.MedianFilter(3)))
    ink = float(denoised.max())
    if ink - background < MIN_CONTRAST:
        raise ValueError("no digit found: the picture is blank or has too little contrast")
    return np.clip((grey - background) / (ink - background), 0.0, 1.0).astype(np.float32)


def preprocess_ink(ink: np.ndarray) -> np.ndarray:
    """Ink-bright grey [H, W] in [0, 1] -> the MNIST field [28, 28, 1]: crop, fit 20x20, centre."""
    # Paper texture and shading survive the stretch as faint grey. Otsu's split finds the ink:
    # the digit's box is where ink is above it (MNIST boxed the binary strokes), and half of it
    # is the floor below which a pixel is paper (so strokes keep their soft edges).
    visible = ink[ink > 0.02]
    threshold = _otsu_threshold(visible) if visible.size > 1 else 0.5
    floor = threshold / 2
    cleaned = np.clip((ink - floor) / (1.0 - floor), 0.0, 1.0)
    mask = ink > threshold
    if not mask.any():
        raise ValueError("no digit found after removing the background")
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    crop = cleaned[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]

    height, width = crop.shape
    scale = FIT_BOX / max(height, width)
    new_w = max(1, round(width * scale))
    new_h = max(1, round(height * scale))
    patch = np.asarray(
        Image.fromarray(crop.astype(np.float32)).resize((new_w, new_h), Image.Resampling.LANCZOS)
    )
    patch = np.clip(patch, 0.0, None)  # Lanczos rings slightly below zero next to strokes

    total = float(patch.sum())
    if total <= 0:
        raise ValueError("no digit found after scaling")
    ys, xs = np.indices(patch.shape)
    com_y = float((ys * patch).sum()) / total
    com_x = float((xs * patch).sum()) / total
    # Integer shift, as MNIST did; clamp so the patch stays whole inside the field.
    size = contract.IMAGE_SIZE
    top = min(max(round(CENTRE - com_y), 0), size - new_h)
    left = min(max(round(CENTRE - com_x), 0), size - new_w)
    field = np.zeros((size, size), dtype=np.float32)
    field[top : top + new_h, left : left + new_w] = patch
    peak = float(field.max())
    field = np.clip(field / peak, 0.0, 1.0) if peak > 0 else field
    return field[..., np.newaxis]


def preprocess(image: Image.Image) -> np.ndarray:
    """A picture of one digit (any size, colour or grey, either polarity) -> float32 [28, 28, 1]."""
    return preprocess_ink(ink_image(image))


# --- loading inputs ------------------------------------------------------------------------------
def _load_picture(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.draft("L", (MAX_SIDE, MAX_SIDE))  # JPEG decodes at reduced scale: faster
            image.load()
            return preprocess(image)
    except UnidentifiedImageError:
        raise InputError(
            str(path), "not an image (Pillow reads PNG, JPEG, GIF, BMP, TIFF, WebP...)"
        ) from None
    except Image.DecompressionBombError as exc:
        raise InputError(str(path), f"image too large: {exc}") from None
    except (OSError, SyntaxError) as exc:  # truncated or corrupt image data
        raise InputError(str(path), f"cannot decode image: {exc}") from None
    except ValueError as exc:
        raise InputError(str(path), str(exc)) from None


def _array_to_inputs(source: str, array: np.ndarray) -> list[InputImage]:
    """A loaded .npy array -> model inputs (see the module docstring for accepted shapes)."""
    values = _pixel_values(source, array)
    batch = _image_batch(values)
    if batch is not None:
        return _batch_inputs(source, batch)
    if values.ndim == 2 and min(values.shape) > 1:
        # A grey picture of another size: make it MNIST-like like any picture.
        return [InputImage(source, _array_picture(source, values))]
    size = contract.IMAGE_SIZE
    raise InputError(
        source,
        f"array shape {list(values.shape)} is not an image; expected [{size},{size}], "
        f"[{size},{size},1], [{contract.PIXELS}] or N of those",
    )


def _pixel_values(source: str, array: np.ndarray) -> np.ndarray:
    """The array as float32 pixels in [0, 1]: uint8 bytes scaled as MNIST did, other numbers
    checked to be in range already."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / contract.PIXEL_SCALE
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise InputError(source, f"array dtype {array.dtype} is not numeric")
    values = array.astype(np.float32)
    if not np.all(np.isfinite(values)):
        raise InputError(source, "array holds NaN or infinite values")
    if values.size and (values.min() < 0.0 or values.max() > 1.0):
        raise InputError(
            source,
            f"pixel values span [{values.min():g}, {values.max():g}]; scale them to [0, 1] "
            f"(MNIST: byte / {contract.PIXEL_SCALE:g}) or save the array as uint8",
        )
    return values


def _image_batch(values: np.ndarray) -> np.ndarray | None:
    """One image or N images of the model's size as [N, 28, 28, 1]; None for any other shape."""
    size = contract.IMAGE_SIZE
    image_shapes = ((size, size), (size, size, 1), (contract.PIXELS,))
    if values.shape in image_shapes:
        return values.reshape(1, size, size, 1)
    if values.ndim >= 2 and values.shape[1:] in image_shapes:
        return values.reshape(values.shape[0], size, size, 1)
    return None


def _array_picture(source: str, grey: np.ndarray) -> np.ndarray:
    """A 2-D grey array of any size preprocessed as a picture -> [28, 28, 1]."""
    try:
        return preprocess_ink(_stretched(grey, background=None))
    except ValueError as exc:
        raise InputError(source, str(exc)) from None


def _batch_inputs(source: str, batch: np.ndarray) -> list[InputImage]:
    """A [N, 28, 28, 1] batch as inputs named ``source`` (one image) or ``source[i]``."""
    if batch.shape[0] == 0:
        raise InputError(source, "array holds no images")
    if batch.shape[0] == 1:
        return [InputImage(source, batch[0])]
    return [InputImage(f"{source}[{i}]", batch[i]) for i in range(batch.shape[0])]


def _load_npy(path: Path) -> list[InputImage]:
    try:
        array = np.load(path, allow_pickle=False)  # never unpickle a file we were handed
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(str(path), f"not a readable .npy array: {exc}") from None
    if not isinstance(array, np.ndarray):
        raise InputError(str(path), "holds an archive (.npz), not one array")
    return _array_to_inputs(str(path), array)


def parse_mnist_spec(spec: str) -> tuple[str, list[int]]:
    """``mnist:t10k:123`` -> ("t10k", [123]); ``mnist:test:0-9`` -> ("test", [0..9])."""
    parts = spec[len(MNIST_PREFIX) :].split(":")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise InputError(spec, "expected mnist:SPLIT:INDEX or mnist:SPLIT:FIRST-LAST (e.g. mnist:t10k:7)")
    split, which = parts
    try:
        if "-" in which:
            first, last = (int(x) for x in which.split("-", 1))
            if last < first:
                raise ValueError
            indices = list(range(first, last + 1))
        else:
            indices = [int(which)]
    except ValueError:
        raise InputError(spec, f"bad index {which!r}; use N or FIRST-LAST") from None
    return split, indices


def _load_mnist(spec: str, directory: str | None) -> list[InputImage]:
    split, indices = parse_mnist_spec(spec)
    try:
        images, labels = load_split(split, directory)
    except DataError as exc:
        raise InputError(spec, str(exc)) from None
    bad = [i for i in indices if not 0 <= i < len(images)]
    if bad:
        raise InputError(spec, f"index {bad[0]} out of range 0-{len(images) - 1}")
    pixels = to_model_input(images[indices])
    return [
        InputImage(f"{MNIST_PREFIX}{split}:{i}", pixels[k], int(labels[i])) for k, i in enumerate(indices)
    ]


def load_inputs(spec: str, *, mnist_directory: str | os.PathLike[str] | None = None) -> list[InputImage]:
    """One CLI argument -> its model inputs; :class:`InputError` says what is wrong with it."""
    if spec.startswith(MNIST_PREFIX):
        return _load_mnist(spec, None if mnist_directory is None else str(mnist_directory))
    path = Path(spec)
    if not path.exists():
        raise InputError(spec, "no such file")
    if path.is_dir():
        raise InputError(spec, "is a directory, not a file")
    try:
        if path.stat().st_size == 0:
            raise InputError(spec, "empty file")
    except OSError as exc:
        raise InputError(spec, f"cannot read: {exc.strerror}") from None
    if path.suffix.lower() == ".npy":
        return _load_npy(path)
    return [InputImage(spec, _load_picture(path))]
