"""Settings: TF Serving flag names, environment defaults, unknown flags fail, one definition."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from contract import GRPC_PORT, MODEL_NAME, REST_PORT
from serving.core.dataplane import DataPlane
from serving.core.repository import ModelRepository
from serving.core.runtime import LoadedModel
from serving.grpc.server import build_server
from serving.grpc.tfserving_servicer import PredictionHandlers
from serving.rest.app import create_app
from serving.rest.gateway import RSGIGateway
from serving.settings import SETTINGS_ENV, Settings, load_settings


def test_defaults_are_tf_serving_ports_and_model() -> None:
    settings = load_settings([], {})
    assert (settings.port, settings.rest_api_port, settings.model_name) == (
        GRPC_PORT,
        REST_PORT,
        MODEL_NAME,
    )
    assert settings.tensorflow_intra_op_parallelism == 1


def test_tf_serving_spellings_and_flag_beats_env() -> None:
    env = {
        "SERVING_PORT": "9000",
        "SERVING_REST_API_PORT": "9001",
        "SERVING_ENABLE_BATCHING": "true",
    }
    settings = load_settings(
        ["--port=9100", "--model_base_path", "/models/lenet5", "--file_system_poll_wait_seconds=5"],
        env,
    )
    assert settings.port == 9100  # flag beats env
    assert settings.rest_api_port == 9001  # env beats default
    assert settings.enable_batching is True
    assert settings.model_base_path == "/models/lenet5"
    assert settings.file_system_poll_wait_seconds == 5


@pytest.mark.parametrize(
    "argv",
    [
        ["--no_such_flag=1"],
        ["--por", "1"],  # abbreviations must not silently match --port
        ["--port", "eighty"],
        ["--enable_batching=maybe"],
        ["--port", "8500", "--rest_api_port", "8500"],
        ["--model_version_policy", "newest"],
        ["--version_labels", "stable"],
        ["--num_workers", "0"],
        ["--rest_api_max_connections", "0"],
        ["--rest_api_header_timeout_in_ms", "0"],
        ["--rest_api_body_timeout_in_ms", "-1"],
        ["--rest_api_interface", "asgi"],
        ["--quality_sample_every", "0"],
    ],
)
def test_bad_flags_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        load_settings(argv, {})
    assert info.value.code == 2


def test_bad_environment_value_exits_2() -> None:
    with pytest.raises(SystemExit):
        load_settings([], {"SERVING_PORT": "x"})


def test_boolean_flag_forms_and_labels() -> None:
    assert load_settings(["--enable_batching"], {}).enable_batching is True
    assert (
        load_settings(["--enable_batching=false"], {"SERVING_ENABLE_BATCHING": "1"}).enable_batching is False
    )
    assert load_settings(["--version_labels", "stable=1,canary=2"], {}).version_label_map == {
        "stable": 1,
        "canary": 2,
    }


def test_slow_client_bounds_have_flags_and_environment_defaults() -> None:
    settings = load_settings(
        ["--rest_api_body_timeout_in_ms=5000", "--rest_api_max_connections", "64"],
        {"SERVING_REST_API_HEADER_TIMEOUT_IN_MS": "2000", "SERVING_REST_API_MAX_CONNECTIONS": "8"},
    )
    assert settings.rest_api_body_timeout_in_ms == 5000
    assert settings.rest_api_header_timeout_in_ms == 2000  # env beats default
    assert settings.rest_api_max_connections == 64  # flag beats env
    defaults = load_settings([], {})
    assert (defaults.rest_api_header_timeout_in_ms, defaults.rest_api_body_timeout_in_ms) == (10000, 30000)


def test_restart_and_drain_flags_have_defaults_and_environment() -> None:
    defaults = load_settings([], {})
    assert (defaults.max_worker_restarts, defaults.worker_restart_window_seconds) == (5, 60.0)
    assert defaults.shutdown_drain_seconds == 2.0 < defaults.shutdown_grace_period_seconds
    settings = load_settings(
        ["--max_worker_restarts=0", "--shutdown_drain_seconds", "0"],
        {"SERVING_WORKER_RESTART_WINDOW_SECONDS": "30", "SERVING_MAX_WORKER_RESTARTS": "9"},
    )
    assert settings.max_worker_restarts == 0  # flag beats env: the first crash stops the server
    assert settings.worker_restart_window_seconds == 30.0  # env beats default
    assert settings.shutdown_drain_seconds == 0.0


def test_json_round_trip_for_workers() -> None:
    settings = load_settings(["--port", "1234", "--access_log=false"], {})
    assert Settings.from_json(settings.to_json()) == settings


def test_worker_settings_come_from_the_supervisors_environment() -> None:
    settings = load_settings(["--num_workers", "3", "--enable_batching"], {})
    assert Settings.from_worker_env({SETTINGS_ENV: settings.to_json()}) == settings
    # The hand-over variable is no flag's environment default.
    assert SETTINGS_ENV.removeprefix("SERVING_").lower() not in {f.name for f in dataclasses.fields(Settings)}


# Where a component takes a flag's value, its default is the flag's (defined once, in Settings).
COMPONENT_DEFAULTS = [
    (create_app, "max_request_bytes", "max_request_bytes", 1),
    (create_app, "timeout_seconds", "rest_api_timeout_in_ms", 1000),
    (create_app, "access_log", "access_log", 1),
    (build_server, "max_threads", "grpc_max_threads", 1),
    (build_server, "max_message_bytes", "max_request_bytes", 1),
    (build_server, "access_log", "access_log", 1),
    (PredictionHandlers, "access_log", "access_log", 1),
    (ModelRepository, "policy", "model_version_policy", 1),
    (ModelRepository, "poll_wait_seconds", "file_system_poll_wait_seconds", 1),
    (ModelRepository, "warm_up", "enable_model_warmup", 1),
    (ModelRepository, "intra_op_threads", "tensorflow_intra_op_parallelism", 1),
    (LoadedModel, "intra_op_threads", "tensorflow_intra_op_parallelism", 1),
    (RSGIGateway, "body_timeout_seconds", "rest_api_body_timeout_in_ms", 1000),
    (RSGIGateway, "max_body_bytes", "max_request_bytes", 1),
    (RSGIGateway, "threads", "rest_api_num_threads", 1),
    (DataPlane, "quality_sample_every", "quality_sample_every", 1),
]


@pytest.mark.parametrize(("component", "parameter", "flag", "scale"), COMPONENT_DEFAULTS)
def test_component_defaults_are_the_flag_defaults(component, parameter: str, flag: str, scale: int) -> None:
    default = inspect.signature(component).parameters[parameter].default
    (field,) = [f for f in dataclasses.fields(Settings) if f.name == flag]
    assert default * scale == field.default


def test_every_flag_is_documented() -> None:
    """docs/serving.md's flag table describes Settings; a new flag must appear there too."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "serving.md").read_text()
    missing = [f.name for f in dataclasses.fields(Settings) if f"`--{f.name}`" not in docs]
    assert not missing, missing
