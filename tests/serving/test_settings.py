"""Settings: TF Serving flag names, environment defaults, unknown flags fail."""

from __future__ import annotations

import pytest

from contract import GRPC_PORT, MODEL_NAME, REST_PORT
from serving.settings import Settings, load_settings


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


def test_json_round_trip_for_workers() -> None:
    settings = load_settings(["--port", "1234", "--access_log=false"], {})
    assert Settings.from_json(settings.to_json()) == settings
