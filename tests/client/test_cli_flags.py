"""The command line's parsing (no server): ``--model`` names the model in every subcommand, and
``--model-name``, its older spelling, still works."""

from __future__ import annotations

import pytest

import contract
from client.cli import build_parser, cmd_metadata, cmd_predict, cmd_status

COMMANDS = {
    "predict": (["predict", "digit.png"], cmd_predict),
    "status": (["status"], cmd_status),
    "metadata": (["metadata"], cmd_metadata),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_takes_the_model_by_name(command: str) -> None:
    argv, func = COMMANDS[command]
    parser = build_parser()
    where = ["--rest", f"http://127.0.0.1:{contract.REST_PORT}"]
    default = parser.parse_args([*argv, *where])
    assert (default.model_name, default.func) == (contract.MODEL_NAME, func)
    for flag in ("--model", "--model-name"):
        args = parser.parse_args([*argv, *where, flag, "lenet5-ensemble"])
        assert args.model_name == "lenet5-ensemble", flag


def test_the_help_names_model_first(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["status", "--help"])
    assert "--model NAME, --model-name NAME" in capsys.readouterr().out
