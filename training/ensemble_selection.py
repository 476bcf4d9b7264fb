"""Ensemble selection: which runs form an ``[[ensembles]]`` committee, chosen on validation only.

1. **Candidates** (:func:`candidates`): the ensemble's runs that completed with a saved model,
   their records checked against the configs that trained them (training/identity.py). A
   candidate not trained, unfinished, diverged or failed is *missing*: the export is refused
   (:class:`EnsembleError`, exit 2) naming them, unless ``partial``, when the others are used
   and the card names the missing ones. A legacy record is refused unless ``allow_legacy``.
2. **The choice** (:func:`choose`), on the validation split: candidates ranked by their own
   validation accuracy (ties to the lower run index); for k = 1..K the committee is the top k,
   combined by one of :data:`RULES`; the (k, rule) with the best validation accuracy wins, ties
   to the smaller k (cheaper to serve), then to the mean of probabilities.
3. **The test set, after** (:func:`with_test_accuracy`): the accuracy of every (k, rule) on the test
   split, for the card and the figure; it chooses nothing.

Numpy only: no TensorFlow (the export refuses before its slow import). Models' outputs come in
as log-probabilities, [candidates, images, classes].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training import identity
from training.config import ENSEMBLE_MODELS, EnsembleSpec, Grid
from training.records import COMPLETED, MODEL_FILE, read_result

# How members' outputs combine, in order of preference on a tie:
# - mean_probabilities: the mean of the members' probabilities;
# - mean_logits: the mean of their logits, i.e. of their log-probabilities (the softmax of
#   either is the same: the renormalised geometric mean of the probabilities).
MEAN_PROBABILITIES, MEAN_LOGITS = "mean_probabilities", "mean_logits"
RULES = (MEAN_PROBABILITIES, MEAN_LOGITS)


class EnsembleError(RuntimeError):
    """An ensemble that cannot be exported as its grid declares it (exit status 2)."""


@dataclass(frozen=True)
class Candidate:
    """A finished candidate: its run index and name, and its checked result record."""

    index: int
    name: str
    result: dict[str, Any]


@dataclass(frozen=True)
class Missing:
    """A candidate the committee cannot use, and why."""

    index: int
    name: str
    reason: str


# --- 1. Candidates --------------------------------------------------------------------------------
def _missing_reason(grid_dir: Path, name: str, result: dict[str, Any] | None) -> str:
    """Why run ``name`` cannot be a member ('' when it can)."""
    if result is None:
        return "not finished: no result.json"
    if result.get("status") != COMPLETED:
        return f"status {result.get('status')!r}"
    if not (grid_dir / name / MODEL_FILE).exists():
        return f"no {MODEL_FILE}"
    return ""


def candidates(grid: Grid, spec: EnsembleSpec, grid_dir: Path, *, partial: bool = False,
               allow_legacy: bool = False) -> tuple[list[Candidate], list[Missing]]:
    """The finished candidates of ``spec`` (records checked) and the missing ones."""
    found: list[Candidate] = []
    missing: list[Missing] = []
    for index in spec.candidates:
        name = grid.runs[index].name
        result = read_result(grid_dir / name)
        reason = _missing_reason(grid_dir, name, result)
        if reason:
            missing.append(Missing(index, name, reason))
        else:
            found.append(Candidate(index, name, {**result, "index": index}))
    if missing and not partial:
        raise EnsembleError(f"ensemble {spec.name!r}: {len(missing)} of its "
                            f"{len(spec.candidates)} candidates cannot be used: "
                            f"{_listed(missing)}; train them, or export the others with --partial")
    if not found:
        raise EnsembleError(f"ensemble {spec.name!r}: none of its candidates in {grid_dir} "
                            f"completed with a saved model")
    _check_records(grid_dir, found, allow_legacy)
    return found, missing


def _listed(missing: Sequence[Missing]) -> str:
    return ", ".join(f"run {m.index} {m.name} ({m.reason})" for m in missing)


def _check_records(grid_dir: Path, found: Sequence[Candidate], allow_legacy: bool) -> None:
    """Every record tied to its config (legacy ones only with ``allow_legacy``), every trained
    model of the LeNet-5 family."""
    legacy = identity.check_records(grid_dir, [c.result for c in found])
    if legacy and not allow_legacy:
        raise identity.IdentityError(
            f"{grid_dir}: {', '.join(legacy)} recorded before runs carried a config digest, so "
            f"nothing shows that their records' configs trained their weights; retrain them "
            f"(run with --restart) or export anyway with --allow-legacy (the model card then "
            f"says config_verified: false for them)")
    for candidate in found:
        model = (candidate.result.get("config") or {}).get("model", candidate.result.get("model"))
        if model not in ENSEMBLE_MODELS:
            raise EnsembleError(f"{grid_dir / candidate.name}: trained as a {model!r} model; an "
                                f"ensemble's members are of the LeNet-5 family: "
                                f"{', '.join(ENSEMBLE_MODELS)}")


# --- 2. The choice, on validation -----------------------------------------------------------------
def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities (float64) of logits [..., classes]."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def combine(log_probabilities: np.ndarray, rule: str) -> np.ndarray:
    """The committee's log-probabilities [images, classes] from its members' [members, images,
    classes], by ``rule`` (the exported graph computes the same: training.models.committee)."""
    if rule == MEAN_PROBABILITIES:
        top = log_probabilities.max(axis=0)
        mean = np.exp(log_probabilities - top).mean(axis=0)
        return top + np.log(mean)
    if rule == MEAN_LOGITS:
        return log_softmax(log_probabilities.mean(axis=0))
    raise ValueError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")


def accuracy(log_probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(log_probabilities, axis=-1) == labels))


@dataclass(frozen=True)
class Choice:
    """The committee validation chose, and the validation curve behind the choice."""

    order: tuple[int, ...]  # candidate positions, best validation accuracy first
    accuracies: tuple[float, ...]  # each candidate's own validation accuracy, by position
    k: int
    rule: str
    validation_accuracy: float  # the committee's
    curve: tuple[dict[str, Any], ...]  # {"k", "rule", "validation_accuracy"} for every k, rule

    @property
    def members(self) -> tuple[int, ...]:
        """The chosen candidates' positions, best first."""
        return self.order[:self.k]


def choose(validation: np.ndarray, labels: np.ndarray, run_indexes: Sequence[int],
           max_members: int | None = None) -> Choice:
    """Rank the candidates (``validation``: their log-probabilities on the validation split,
    [candidates, images, classes]; ``run_indexes``: their run indices, for ties) and choose
    the committee: the best (k, rule) by validation accuracy, ties to the smaller k, then to
    the earlier rule of :data:`RULES`."""
    own = [accuracy(p, labels) for p in validation]
    order = sorted(range(len(own)), key=lambda i: (-own[i], run_indexes[i]))
    limit = min(max_members or len(order), len(order))
    curve = [{"k": k, "rule": rule,
              "validation_accuracy": accuracy(combine(validation[order[:k]], rule), labels)}
             for k in range(1, limit + 1) for rule in RULES]
    best = max(curve, key=lambda p: (p["validation_accuracy"], -p["k"], -RULES.index(p["rule"])))
    return Choice(tuple(order), tuple(own), best["k"], best["rule"], best["validation_accuracy"],
                  tuple(curve))


# --- 3. The test set, once the choice is made -----------------------------------------------------
def with_test_accuracy(choice: Choice, test: np.ndarray, labels: np.ndarray) -> list[dict[str, Any]]:
    """The choice's curve with each point's test accuracy (``test``: the candidates'
    log-probabilities on the test split). For the card and the figure: it chooses nothing."""
    return [{**point, "test_accuracy": accuracy(
        combine(test[list(choice.order[:point["k"]])], point["rule"]), labels)}
        for point in choice.curve]
