"""One observation per finished request: the Prometheus samples and the access-log line."""

from __future__ import annotations

import json
import logging
import threading

import pytest
from prometheus_client import REGISTRY

from contract.errors import Code
from serving.observability import metrics
from serving.observability.logs import ACCESS_LOGGER, JsonFormatter
from serving.observability.observer import RequestObserver


def _count(api: str, method: str, code: str, served: tuple[str, str] = ("", "")) -> float:
    labels = {"api": api, "protocol": "tfserving", "method": method, "code": code,
              "model": served[0], "version": served[1]}
    return REGISTRY.get_sample_value("serving_requests_total", labels) or 0.0


def _latency_count(api: str, method: str, served: tuple[str, str] = ("", "")) -> float:
    labels = {"api": api, "protocol": "tfserving", "method": method, "model": served[0], "version": served[1]}
    return REGISTRY.get_sample_value("serving_request_latency_seconds_count", labels) or 0.0


def test_finished_counts_times_and_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    served = ("lenet5", "3")
    before = (_count("observe-test", "predict", "NOT_FOUND", served),
              _latency_count("observe-test", "predict", served))
    metrics.request_addressed("lenet5", 3)  # what the data plane records during the request
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        RequestObserver("observe-test").finished(
            "predict", Code.NOT_FOUND, 0.0012345, method="POST", path="/x", status=404
        )
    assert _count("observe-test", "predict", "NOT_FOUND", served) == before[0] + 1
    assert _latency_count("observe-test", "predict", served) == before[1] + 1
    (record,) = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    line = JsonFormatter().format(record)  # access lines pass through the formatter unwrapped
    assert list(json.loads(line).items()) == [
        ("api", "observe-test"),
        ("protocol", "tfserving"),
        ("model", "lenet5"),
        ("version", "3"),
        ("method", "POST"),
        ("path", "/x"),
        ("status", 404),
        ("ms", 1.234),
    ]


def test_the_next_request_starts_without_the_last_ones_labels() -> None:
    metrics.request_addressed("lenet5", 2)
    metrics.request_addressed("lenet5")  # the model named, its version not (yet) chosen
    before = _count("observe-next", "status", "OK", ("lenet5", "")), _count("observe-next", "status", "OK")
    observer = RequestObserver("observe-next", access_log=False)
    observer.finished("status", "OK", 0.001, code="OK")
    observer.finished("status", "OK", 0.001, code="OK")  # failed before the data plane: no labels
    after = _count("observe-next", "status", "OK", ("lenet5", "")), _count("observe-next", "status", "OK")
    assert after == (before[0] + 1, before[1] + 1)


def test_labels_stay_in_their_thread() -> None:
    metrics.take_request_labels()
    thread = threading.Thread(target=metrics.request_addressed, args=("lenet5", 4))
    thread.start()
    thread.join()
    assert metrics.take_request_labels() == ("", "")


def test_access_log_off_still_counts(caplog: pytest.LogCaptureFixture) -> None:
    before = _count("observe-quiet", "status", "OK")
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        RequestObserver("observe-quiet", access_log=False).finished("status", "OK", 0.001, code="OK")
    assert _count("observe-quiet", "status", "OK") == before + 1
    assert not [r for r in caplog.records if r.name == ACCESS_LOGGER]


def test_other_log_records_are_wrapped_in_json() -> None:
    record = logging.LogRecord("serving.core.repository", logging.ERROR, __file__, 1, "failed %d", (3,), None)
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["level"], entry["logger"]) == ("ERROR", "serving.core.repository")
    assert entry["message"] == "failed 3"
