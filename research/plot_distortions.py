"""What the training-time distortions do to digits: a PNG of originals and distorted copies.

Usage: python -m research.plot_distortions [--data-dir DIR] [--out docs/figures/distortions.png]

Rows: the original training images; the affine distortions (models.augmenter: rotation, shift,
zoom); elastic distortions (training.distortions, Simard's alpha 34, sigma 4); affine and
elastic composed into one field and resampled once (what training uses); and the two chained,
resampled twice, which blurs (the reason for composing them).

TensorFlow, Keras and the training modules are imported inside main(), so that --help answers
at once; none of these imports breaks a cycle.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="MNIST directory (default: $MNIST_DIR or data/mnist)")
    parser.add_argument("--out", type=Path, default=Path("docs/figures/distortions.png"),
                        help="the PNG (default: docs/figures/distortions.png, run from the repository root)")
    parser.add_argument("--count", type=int, default=10, help="digits per row")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import tensorflow as tf

    from training import data, distortions, models

    mnist = data.load(args.data_dir)
    images = mnist.train_images[: args.count]
    seed = tf.constant([args.seed, 0], tf.int64)
    affine = models.augmenter(args.seed)(images, training=True)
    rows = {
        "original": images,
        "affine": affine,
        f"elastic (alpha {distortions.SIMARD_ALPHA:g}, sigma {distortions.SIMARD_SIGMA:g})":
            distortions.elastic(images, seed),
        "ours: affine + elastic,\none resampling (training)": distortions.distort(images, seed),
        "both chained (two\nresamplings: blurs)": distortions.elastic(affine, seed),
    }
    fig, axes = plt.subplots(len(rows), args.count, figsize=(args.count * 0.9, len(rows) * 1.1))
    for r, (title, batch) in enumerate(rows.items()):
        batch = tf.convert_to_tensor(batch).numpy()
        for c in range(args.count):
            axes[r, c].imshow(batch[c, ..., 0], cmap="gray_r", vmin=0, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("Training-time distortions of MNIST digits")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
