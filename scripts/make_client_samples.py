"""Make client/samples/: ten MNIST test digits (one per class) rendered like photos of paper.

Usage: MNIST_DIR=data/mnist python scripts/make_client_samples.py [--out client/samples]

Each digit is enlarged and drawn the way a person would photograph or scan it: dark ink on
light paper (or chalk on a board), colour or grey, with uneven lighting, sensor noise, a slight
tilt and blur, at different sizes and off-centre, saved as PNG or JPEG. The demo and the CLI
tests classify them, so they exercise the whole preprocessing path. The file name carries the
true digit and the MNIST test index it came from (MNIST: Y. LeCun, C. Cortes, C. Burges,
CC BY-SA 3.0).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from contract.mnist import load_split

# (digit, MNIST test index, style, output side in px, file type)
SAMPLES = [
    (0, 3, "pencil", 180, "jpg"),
    (1, 2, "marker", 320, "png"),
    (2, 1, "ballpoint", 240, "jpg"),
    (3, 18, "chalk", 200, "png"),
    (4, 4, "pencil", 150, "png"),
    (5, 15, "ballpoint", 260, "jpg"),
    (6, 11, "marker", 120, "png"),
    (7, 0, "chalk", 280, "jpg"),
    (8, 61, "pencil", 220, "png"),
    (9, 7, "marker", 60, "png"),
]
# style -> (paper RGB, ink RGB)
COLOURS = {
    "pencil": ((228, 226, 220), (70, 70, 75)),
    "marker": ((250, 250, 250), (10, 10, 10)),
    "ballpoint": ((246, 236, 170), (25, 40, 150)),  # blue pen on a yellow sticky note
    "chalk": ((40, 60, 50), (235, 235, 225)),  # light on dark
}


def render(digit: np.ndarray, style: str, side: int, rng: np.random.Generator) -> Image.Image:
    ink_mask = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    ink_mask = ink_mask.rotate(float(rng.uniform(-8, 8)), Image.Resampling.BICUBIC)
    width, height = int(side * rng.uniform(1.3, 1.7)), int(side * rng.uniform(1.2, 1.5))
    canvas = Image.new("L", (width, height), 0)
    canvas.paste(ink_mask, (int(rng.integers(0, width - side)), int(rng.integers(0, height - side))))
    alpha = np.asarray(canvas.filter(ImageFilter.GaussianBlur(side / 200)), np.float32) / 255
    paper, ink = (np.array(c, np.float32) for c in COLOURS[style])
    picture = paper * (1 - alpha[..., None]) + ink * alpha[..., None]
    # light falling from one side, and sensor noise
    light = np.linspace(rng.uniform(0.8, 0.9), 1.0, width, dtype=np.float32)[None, :, None]
    picture = picture * light + rng.normal(0, 4, picture.shape)
    return Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8), "RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(__file__).resolve().parent.parent / "client" / "samples"
    parser.add_argument("--out", default=str(default_out))
    parser.add_argument("--mnist-dir", default=None)
    args = parser.parse_args()
    images, labels = load_split("t10k", args.mnist_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2024)
    for digit, index, style, side, kind in SAMPLES:
        assert labels[index] == digit, f"MNIST test {index} is a {labels[index]}, not a {digit}"
        picture = render(images[index], style, side, rng)
        path = out / f"digit-{digit}-{style}-t10k-{index}.{kind}"
        if kind == "jpg":
            picture.save(path, quality=85)
        else:  # a 32-colour palette keeps noisy PNGs small (and tests the palette path)
            picture.quantize(32).save(path, optimize=True)
        print(f"{path}  {picture.size[0]}x{picture.size[1]}  {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
