"""Ensemble export: an ``[[ensembles]]`` committee -> one model with the single model's signature.

    python -m training export --grid ensemble --ensemble lenet5-ensemble

The candidates come checked (training/ensemble_selection.py: finished, identity verified). Then:

1. each candidate's saved model computes its log-probabilities on the validation split, and the
   committee (k, rule) is chosen on them alone;
2. only then the test split, once: every top-k committee's test accuracy, for the card and the
   figure (``RUNS_DIR/<grid>/figures/<ensemble>-members.{png,json}``); it chooses nothing;
3. the chosen members become one Keras graph (:func:`training.models.committee`), published by
   :func:`training.export.publish` as every export: SavedModel and ONNX under the contract's
   names, the parity gate, the card's common part, atomically. The card lists every member; the
   figure travels in the version directory as ``members.png``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from training import baseline, models
from training.config import EnsembleSpec, Grid
from training.data import Mnist
from training.ensemble_selection import (
    Candidate,
    Choice,
    Missing,
    accuracy,
    choose,
    log_softmax,
    with_test_accuracy,
)
from training.export import publish, run_identity
from training.records import MODEL_FILE, write_json_atomic
from training.report import members_figure
from training.selection import reproduce

log = logging.getLogger(__name__)

FIGURES_DIR = "figures"  # in the grid's runs directory
FIGURE_FILE = "members.png"  # in the version directory
BATCH = 1000
SELECTION = ("candidates ranked by validation accuracy (ties to the lower run index); the top k "
             "combined by mean_probabilities or mean_logits; (k, rule) with the highest "
             "validation accuracy, ties to the smaller k, then to mean_probabilities; the test "
             "split read only after the choice")


def export_ensemble(grid: Grid, spec: EnsembleSpec, runs_dir: Path, model_base_path: Path,
                    data: Mnist, found: Sequence[Candidate],
                    missing: Sequence[Missing] = ()) -> int:
    """Choose ``spec``'s committee among ``found`` on validation and publish it as the next
    version of ``model_base_path``; returns the version number."""
    grid_dir = runs_dir / grid.name
    trained = [keras.models.load_model(grid_dir / c.name / MODEL_FILE) for c in found]

    # The choice, on the validation split only.
    validation = _log_probabilities(trained, data.validation_images)
    choice = choose(validation, data.validation_labels, [c.index for c in found],
                    spec.max_members)
    log.info("ensemble %s: %d of %d candidates, %s (validation %.4f)", spec.name, choice.k,
             len(found), choice.rule, choice.validation_accuracy)

    # Only now the test split: the card's and the figure's figures, never a choice.
    test = _log_probabilities(trained, data.test_images)
    curve = with_test_accuracy(choice, test, data.test_labels)
    own_test = [accuracy(p, data.test_labels) for p in test]
    figure = _write_figure(grid_dir / FIGURES_DIR, grid, spec, choice, curve)

    chosen = choice.members
    model = models.committee([trained[i] for i in chosen], [f"run{found[i].index}" for i in chosen],
                             choice.rule, name=spec.name.replace("-", "_"))
    card = _card(grid, spec, found, missing, choice, curve, own_test)
    card.update(parameter_count=int(model.count_params()), data_checksums=data.checksums)
    limit = _train_limit([found[i].result.get("config") or {} for i in chosen])
    return publish(model, model_base_path, data.test_images, card,
                   baseline.splits(data, limit), attachments={FIGURE_FILE: figure})


def _log_probabilities(trained: Sequence[keras.Model], images: np.ndarray) -> np.ndarray:
    """[models, images, classes] log-probabilities (float64) of each model on ``images``."""
    return np.stack([log_softmax(m.predict(images, batch_size=BATCH, verbose=0))
                     for m in trained])


def _train_limit(configs: Sequence[dict[str, Any]]) -> int | None:
    """The images the committee trained on, for the card's baseline: all of the training split
    when a member used it all, else the most any member used (they are the same first ones)."""
    limits = [c.get("train_limit") for c in configs]
    return None if None in limits else max(limits)


def _committee_test_accuracy(choice: Choice, curve: Sequence[dict[str, Any]]) -> float:
    return next(p["test_accuracy"] for p in curve if (p["k"], p["rule"]) == (choice.k, choice.rule))


def _write_figure(directory: Path, grid: Grid, spec: EnsembleSpec, choice: Choice,
                  curve: Sequence[dict[str, Any]]) -> Path:
    """``<ensemble>-members.png`` (accuracy against the number of members) and its curve as
    ``<ensemble>-members.json`` in ``directory``; returns the figure's path."""
    figure = directory / f"{spec.name}-members.png"
    members_figure(curve, choice.k, choice.rule,
                   f"{spec.name} ({grid.name}): accuracy against the number of members", figure)
    write_json_atomic(directory / f"{spec.name}-members.json", {
        "ensemble": spec.name, "grid": grid.source, "k": choice.k, "rule": choice.rule,
        "validation_accuracy": choice.validation_accuracy,
        "test_accuracy": _committee_test_accuracy(choice, curve), "curve": list(curve)})
    log.info("figure of ensemble %s: %s", spec.name, figure)
    return figure


def _candidate_entry(choice: Choice, position: int, candidate: Candidate,
                     own_test: Sequence[float]) -> dict[str, Any]:
    """A candidate as the card lists it: run, index, rank by validation, its own accuracies."""
    return {"run": candidate.name, "index": candidate.index,
            "rank": choice.order.index(position) + 1,
            "metrics": {"validation_accuracy": choice.accuracies[position],
                        "test_accuracy": own_test[position]}}


def _card(grid: Grid, spec: EnsembleSpec, found: Sequence[Candidate],
          missing: Sequence[Missing], choice: Choice, curve: Sequence[dict[str, Any]],
          own_test: Sequence[float]) -> dict[str, Any]:
    """The ensemble's part of the model card (training/export.py adds the common part)."""
    members = [{**_candidate_entry(choice, i, found[i], own_test), **run_identity(found[i].result),
                "parameter_count": found[i].result.get("parameter_count")}
               for i in choice.members]
    others = [_candidate_entry(choice, i, found[i], own_test) for i in choice.order[choice.k:]]
    export = f"python -m training export --grid {grid.spec} --ensemble {spec.name}"
    return {
        "ensemble": spec.name,
        "grid": grid.source,
        "selection": SELECTION,
        "rule": choice.rule,
        "k": choice.k,
        "max_members": spec.limit,
        "metrics": {"validation_accuracy": choice.validation_accuracy,
                    "test_accuracy": _committee_test_accuracy(choice, curve)},
        "members": members,  # by rank
        "not_chosen": others,  # finished candidates validation left out, by rank
        "missing": [{"run": m.name, "index": m.index, "reason": m.reason} for m in missing],
        "curve": list(curve),
        "figure": FIGURE_FILE,
        # Retrain every candidate compared (the choice compares them all), then export:
        "reproduce": [*(reproduce(grid, c.result)[0] for c in found),
                      export + (" --partial" if missing else "")],
    }
