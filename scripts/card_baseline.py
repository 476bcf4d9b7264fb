"""Write the training baseline into an exported version's model card, as the export does.

Usage: python scripts/card_baseline.py pretrained/lenet5/1 [--mnist-dir DIR]

For a version exported before the export wrote it (the shipped ``pretrained/lenet5/1``).
Recreates the run's training and validation split from the card's config (the lab's split,
training/data.py; the config's ``train_limit``), runs ONNX Runtime on the version's
``model.onnx`` and computes ``baseline`` with the function the export uses
(training/baseline.py), then rewrites the card atomically in the export's format, every other
key kept. The card is not among the files it hashes, so those hashes stay valid. Refused (exit
2): a ``model.onnx`` that is not the one the card hashes, or MNIST files other than the card's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import contract
from contract.mnist import DataError
from training import baseline, data
from training.records import write_json_atomic

log = logging.getLogger("card_baseline")


class CardError(Exception):
    """The card does not describe the files or the data at hand."""


def _check_model(version_dir: Path, card: dict[str, Any]) -> Path:
    """The version's model.onnx, refused unless it is the file the card hashes."""
    path = version_dir / contract.ONNX_FILENAME
    recorded = card.get("files", {}).get(contract.ONNX_FILENAME)
    if recorded != hashlib.sha256(path.read_bytes()).hexdigest():
        raise CardError(f"{path} is not the model.onnx its card hashes")
    return path


def add_baseline(version_dir: Path, mnist_dir: str | None) -> dict[str, Any]:
    """Compute the version's baseline and write it into its card; returns the baseline."""
    card_path = version_dir / contract.MODEL_CARD_FILENAME
    card = json.loads(card_path.read_text())
    model = _check_model(version_dir, card)
    mnist = data.load(mnist_dir)
    if card.get("data_checksums") != mnist.checksums:
        raise CardError(f"the MNIST files in {data.mnist_dir(mnist_dir)} are not the card's")
    splits = baseline.splits(mnist, (card.get("config") or {}).get("train_limit"))
    card["baseline"] = baseline.card_baseline(splits, baseline.onnx_session(model))
    write_json_atomic(card_path, card)
    return card["baseline"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version_dir", type=Path, help="a version directory, e.g. pretrained/lenet5/1")
    parser.add_argument("--mnist-dir", default=None,
                        help=f"the MNIST files (default ${contract.MNIST_DIR_ENV}, else data/mnist)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = add_baseline(args.version_dir, args.mnist_dir)
    except (CardError, DataError) as exc:
        log.error("card_baseline: %s", exc)
        return 2
    log.info("%s: baseline written\n%s", args.version_dir / contract.MODEL_CARD_FILENAME,
             json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
