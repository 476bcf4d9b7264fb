"""The model-quality metrics: what each predict adds, per model and version, and the baseline
gauge read from a version's model card (metrics of one process: the default registry)."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from contract import INPUT_SHAPE, MODEL_CARD_FILENAME, OUTPUT_DIGIT, OUTPUT_PROBABILITIES, quality
from serving.core.dataplane import DataPlane
from serving.core.repository import ModelRepository
from serving.observability import metrics
from serving.rest.app import create_app
from serving.settings import MULTIPROC_ENV
from tests.serving.conftest import write_model

MODEL = "quality-test"  # this file's own model name: its series are its own
PIXELS = 28 * 28
BASELINE = {
    "input": {
        "images": 55000,
        "split": "train",
        "ink_fraction": {"mean": 0.19, "std": 0.06},
        "mean_intensity": {"mean": 0.13, "std": 0.04},
        "center_offset_pixels": {"mean": 0.6, "std": 0.3},
    },
    "confidence": {
        "images": 5000, "split": "validation", "low_threshold": 0.9, "low_share": 0.004,
        "buckets": list(quality.CONFIDENCE_BUCKETS), "counts": [0, 0, 2, 18, 10, 40, 100, 4830],
    },
}


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _square(rows: slice, cols: slice) -> np.ndarray:
    image = np.zeros(INPUT_SHAPE, np.float32)
    image[rows, cols] = 1.0
    return image


# (image, ink_fraction, mean_intensity, center_offset_pixels)
CENTRED = (_square(slice(12, 16), slice(12, 16)), 16 / PIXELS, 16 / PIXELS, 0.0)
EMPTY = (np.zeros(INPUT_SHAPE, np.float32), 0.0, 0.0, 0.0)
RIGHT = (_square(slice(12, 16), slice(20, 24)), 16 / PIXELS, 16 / PIXELS, 8.0)


def _write_card(version_dir: Path, baseline: dict | None) -> None:
    card = {"model_name": MODEL, "metrics": {"test_accuracy": 0.99}}
    if baseline is not None:
        card["baseline"] = baseline
    (version_dir / MODEL_CARD_FILENAME).write_text(json.dumps(card))


@pytest.fixture
def repository(repository_copy: Path) -> ModelRepository:
    """The tiny model as ``quality-test``, version 1 with a model card holding a baseline."""
    _write_card(repository_copy / "1", BASELINE)
    repository = ModelRepository(MODEL, repository_copy, poll_wait_seconds=0)
    repository.start()
    return repository


class Deltas:
    """The quality series of ``quality-test`` version ``version``, read before and after."""

    HISTOGRAMS = ("serving_prediction_confidence", *(f"serving_input_{name}" for name in quality.STATISTICS))

    def __init__(self, version: str = "1") -> None:
        self.labels = {"model": MODEL, "version": version}
        self.before = self._read()

    def _read(self) -> dict[tuple, float]:
        metrics.flush_quality()  # what the workers' flushing thread does every second
        values = {}
        for family in REGISTRY.collect():
            if family.name in (*self.HISTOGRAMS, "serving_predictions"):
                for sample in family.samples:
                    if sample.name.endswith("_created"):
                        continue
                    if all(sample.labels.get(k) == v for k, v in self.labels.items()):
                        key = (sample.name, sample.labels.get("le") or sample.labels.get("digit"))
                        values[key] = sample.value
        return values

    def moved(self) -> dict[tuple, float]:
        after = self._read()
        return {k: v - self.before.get(k, 0.0) for k, v in after.items() if v != self.before.get(k, 0.0)}


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "flask"])
def test_a_predict_counts_digits_confidence_and_input_statistics(
    repository: ModelRepository, fast: bool
) -> None:
    cases = (CENTRED, EMPTY, RIGHT)
    images = np.stack([case[0] for case in cases])
    expected = repository.get().run(images)
    dataplane = DataPlane(repository, quality_sample_every=1)  # every image's input statistics
    client = create_app(dataplane, access_log=False, fast_predict=fast).test_client()
    deltas = Deltas()
    requests_before = _value("serving_requests_total", api="rest", protocol="tfserving",
                             method="predict", code="OK", model=MODEL, version="1")
    response = client.post(f"/v1/models/{MODEL}:predict", json={"instances": images.tolist()})
    assert response.status_code == 200
    moved = deltas.moved()

    digits = expected[OUTPUT_DIGIT].tolist()
    for digit in set(digits):
        assert moved.pop(("serving_predictions_total", str(digit))) == digits.count(digit)
    top = expected[OUTPUT_PROBABILITIES].max(axis=1).astype(float)
    assert moved.pop(("serving_prediction_confidence_count", None)) == 3
    assert moved.pop(("serving_prediction_confidence_sum", None)) == pytest.approx(top.sum(), abs=1e-6)
    for edge in (*quality.CONFIDENCE_BUCKETS, math.inf):
        below = int((top <= edge).sum())
        assert moved.pop(("serving_prediction_confidence_bucket", _le(edge)), 0) == below, edge
    for column, name in enumerate(quality.STATISTICS, start=1):
        values = [case[column] for case in cases]
        assert moved.pop((f"serving_input_{name}_count", None)) == 3
        assert moved.pop((f"serving_input_{name}_sum", None), 0) == pytest.approx(sum(values), abs=1e-5)
        for edge in (*quality.BUCKETS[name], math.inf):
            below = sum(value <= edge for value in values)
            assert moved.pop((f"serving_input_{name}_bucket", _le(edge)), 0) == below, (name, edge)
    assert moved == {}  # nothing else moved: no series of another digit, model or version
    assert _value("serving_requests_total", api="rest", protocol="tfserving", method="predict",
                  code="OK", model=MODEL, version="1") == requests_before + 1


def _le(edge: float) -> str:
    """The ``le`` label prometheus_client writes for a bucket edge."""
    return "+Inf" if edge == math.inf else repr(float(edge))


def test_a_refused_predict_observes_nothing(repository: ModelRepository) -> None:
    client = create_app(DataPlane(repository), access_log=False).test_client()
    deltas = Deltas()
    response = client.post(f"/v1/models/{MODEL}:predict", json={"instances": [[2.0] * PIXELS]})
    assert response.status_code == 400
    assert deltas.moved() == {}


def test_input_statistics_of_every_kth_image_digits_of_all(repository: ModelRepository) -> None:
    # Image i has i+1 inked pixels, so the sum of ink fractions says which images were sampled.
    images = np.zeros((7, *INPUT_SHAPE), np.float32)
    for index in range(7):
        images[index].reshape(-1)[: index + 1] = 1.0
    dataplane = DataPlane(repository, quality_sample_every=3)
    deltas = Deltas()
    dataplane.predict(MODEL, {"image": images[:2]})  # images 0, 1
    dataplane.predict(MODEL, {"image": images[2:]})  # images 2..6
    moved = deltas.moved()
    assert sum(v for (name, _), v in moved.items() if name == "serving_predictions_total") == 7
    assert moved[("serving_prediction_confidence_count", None)] == 7
    assert moved[("serving_input_ink_fraction_count", None)] == 3  # images 0, 3 and 6
    assert moved[("serving_input_ink_fraction_sum", None)] == pytest.approx((1 + 4 + 7) / PIXELS)


def test_a_workers_thread_writes_the_answers_without_a_scrape(repository: ModelRepository) -> None:
    metrics.start_flushing(interval=0.05)  # as each worker does (a daemon thread, once a process)
    dataplane = DataPlane(repository, quality_sample_every=1)
    before = _value("serving_prediction_confidence_count", model=MODEL, version="1")
    dataplane.predict(MODEL, {"image": np.stack([CENTRED[0], RIGHT[0]])})
    deadline = time.monotonic() + 5
    while _value("serving_prediction_confidence_count", model=MODEL, version="1") < before + 2:
        assert time.monotonic() < deadline, "not flushed"
        time.sleep(0.01)
    assert _value("serving_input_center_offset_pixels_sum", model=MODEL, version="1") >= 8.0


def test_bulk_writes_give_the_samples_observe_gives() -> None:
    """The recorder writes a batch's histogram in one write per bucket, through prometheus_client's
    internals; ``observe`` one value at a time must give the same samples (edges included)."""
    values = np.array([0.0, 0.3, 0.3000001, 0.5, 0.9, 0.95, 0.99, 0.999, 0.9995, 1.0, 0.42], np.float64)
    bulk, one_by_one = metrics.CONFIDENCE.labels(MODEL, "bulk"), metrics.CONFIDENCE.labels(MODEL, "observe")
    metrics._observe_many(bulk, values, quality.CONFIDENCE_BUCKETS)
    for value in values.tolist():
        one_by_one.observe(value)

    def samples(version: str) -> dict[tuple, float]:
        (family,) = [f for f in REGISTRY.collect() if f.name == "serving_prediction_confidence"]
        return {(s.name, s.labels.get("le")): s.value for s in family.samples
                if (s.labels["model"], s.labels["version"]) == (MODEL, version)
                and not s.name.endswith("_created")}

    assert samples("bulk") == pytest.approx(samples("observe"))
    assert samples("bulk")[("serving_prediction_confidence_bucket", "0.3")] == 2  # le: 0.0 and 0.3


def _baseline(version: str, statistic: str, moment: str) -> float | None:
    labels = {"model": MODEL, "version": version, "statistic": statistic, "moment": moment}
    return REGISTRY.get_sample_value("serving_model_baseline", labels)


def test_the_baseline_gauge_comes_from_the_card_while_the_version_serves(
    repository: ModelRepository, caplog: pytest.LogCaptureFixture
) -> None:
    for name in quality.STATISTICS:
        for moment in ("mean", "std"):
            assert _baseline("1", name, moment) == BASELINE["input"][name][moment]
    assert _baseline("1", "low_confidence_share", "value") == 0.004
    # Version 2 (a card without a baseline) replaces 1: 1's series go, 2 has none, a log line says why.
    write_model(repository.base_path / "2", seed=1)
    _write_card(repository.base_path / "2", None)
    with caplog.at_level(logging.INFO, logger="serving.core.repository"):
        repository.poll_once()
    assert [row.version for row in repository.statuses() if row.available] == [2]
    assert _baseline("1", "ink_fraction", "mean") is None
    assert not [s for f in REGISTRY.collect() if f.name == "serving_model_baseline"
                for s in f.samples if s.labels["model"] == MODEL]
    assert any("has no baseline: no serving_model_baseline series" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("card", "level", "says"),
    [
        (None, logging.INFO, "no {card}: no serving_model_baseline series"),
        ("{not json", logging.WARNING, "unreadable baseline in {card} (JSONDecodeError"),
        (json.dumps({"baseline": {"input": {}}}), logging.WARNING, "unreadable baseline in {card} (KeyError"),
    ],
    ids=["no card", "not json", "baseline without statistics"],
)
def test_a_version_without_a_readable_baseline_serves_without_series(
    repository_copy: Path, card: str | None, level: int, says: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = repository_copy / "1" / MODEL_CARD_FILENAME
    if card is not None:
        path.write_text(card)
    repository = ModelRepository(MODEL + "-nocard", repository_copy, poll_wait_seconds=0)
    with caplog.at_level(logging.INFO, logger="serving.core.repository"):
        repository.start()
    assert repository.ready
    assert not [s for f in REGISTRY.collect() if f.name == "serving_model_baseline"
                for s in f.samples if s.labels["model"] == MODEL + "-nocard"]
    (record,) = [r for r in caplog.records if "serving_model_baseline" in r.getMessage()]
    assert record.levelno == level and record.getMessage().startswith(says.format(card=path))


def test_several_processes_zero_the_baseline_instead_of_removing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {("ink_fraction", "mean"): 0.2, ("low_confidence_share", "value"): 0.01}
    metrics.set_baseline(MODEL, 9, values)
    monkeypatch.setenv(MULTIPROC_ENV, "/nonexistent")  # only read at unload time here
    metrics.set_baseline(MODEL, 9, None)
    assert _baseline("9", "ink_fraction", "mean") == 0.0
    assert _baseline("9", "low_confidence_share", "value") == 0.0
    monkeypatch.delenv(MULTIPROC_ENV)
    metrics.set_baseline(MODEL, 9, values)
    metrics.set_baseline(MODEL, 9, None)
    assert _baseline("9", "ink_fraction", "mean") is None
