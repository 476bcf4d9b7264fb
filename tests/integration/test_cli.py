"""The client library and ``python -m client`` against the real server, over REST and gRPC."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import contract
from client.api import ModelSpec
from client.cli import EXIT_INPUT, EXIT_OK, EXIT_REJECTED, EXIT_UNREACHABLE
from client.grpc_client import GrpcClient
from client.rest_client import COLUMNAR_FORMAT, RestClient
from contract.errors import InvalidArgument, NotFound, Unavailable

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "client" / "samples"
pytestmark = pytest.mark.slow


def cli(*args: str, mnist_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if mnist_dir is not None:
        env[contract.MNIST_DIR_ENV] = str(mnist_dir)
    return subprocess.run(
        [sys.executable, "-m", "client", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def clients(running_server):
    rest = RestClient(running_server.rest_url, timeout=10)
    grpc = GrpcClient(running_server.grpc_target, timeout=10)
    yield rest, grpc
    rest.close()
    grpc.close()


def test_both_protocols_give_the_same_answer(clients, mnist_test) -> None:
    rest, grpc = clients
    images, labels = mnist_test
    batch = images[:64]
    by_rest, by_grpc = rest.predict(batch), grpc.predict(batch)
    columnar = RestClient(rest.base_url, request_format=COLUMNAR_FORMAT).predict(batch)
    np.testing.assert_array_equal(by_rest.digits, by_grpc.digits)
    np.testing.assert_array_equal(columnar.digits, by_grpc.digits)
    np.testing.assert_allclose(by_rest.probabilities, by_grpc.probabilities, atol=1e-6)
    assert np.mean(by_grpc.digits == labels[:64]) > 0.9
    assert by_grpc.model_version == 1


def test_status_and_metadata_over_both(clients) -> None:
    for client in clients:
        status = client.status()
        assert [(s.version, s.state) for s in status] == [(1, "AVAILABLE")]
        meta = client.metadata()
        signature = meta.signatures[contract.SIGNATURE_NAME]
        assert signature.inputs[contract.INPUT_NAME].shape == (None, *contract.INPUT_SHAPE)
        assert set(signature.outputs) == set(contract.OUTPUT_NAMES)
        assert meta.version == 1


def test_typed_errors_carry_code_and_server_message(running_server, mnist_test) -> None:
    image = mnist_test[0][:1]
    for client_class, where in (
        (RestClient, running_server.rest_url),
        (GrpcClient, running_server.grpc_target),
    ):
        with client_class(where, ModelSpec(version=99)) as client:
            with pytest.raises(NotFound) as caught:
                client.predict(image)
        assert caught.value.code == "NOT_FOUND" and caught.value.http_status == 404
        assert "99" in caught.value.message
        with client_class(where) as client:
            with pytest.raises(InvalidArgument) as bad:
                client.predict(np.full_like(image, 255.0))  # bytes, not scaled to [0, 1]
        assert bad.value.http_status == 400 and bad.value.message
        with client_class(where, ModelSpec(name="resnet")) as client:
            with pytest.raises(NotFound):
                client.status()


def test_unreachable_server_is_unavailable() -> None:
    for client in (RestClient("http://127.0.0.1:9", timeout=3), GrpcClient("127.0.0.1:9", timeout=3)):
        with client, pytest.raises(Unavailable) as caught:
            client.status()
        assert caught.value.unreachable


def test_cli_classifies_photos_over_rest_and_grpc(running_server) -> None:
    samples = sorted(SAMPLES.glob("digit-*"))
    assert len(samples) == 10
    answers = {}
    for flag, where in (("--rest", running_server.rest_url), ("--grpc", running_server.grpc_target)):
        result = cli("predict", *map(str, samples), flag, where, "--json")
        assert result.returncode == EXIT_OK, result.stderr
        document = json.loads(result.stdout)
        answers[flag] = [r["digit"] for r in document["results"]]
        expected = [int(re.match(r"digit-(\d)", Path(r["input"]).name).group(1)) for r in document["results"]]
        correct = sum(a == e for a, e in zip(answers[flag], expected, strict=True))
        assert correct >= 9, (flag, answers[flag], expected)
        assert all(0.0 <= r["probability"] <= 1.0 for r in document["results"])
    assert answers["--rest"] == answers["--grpc"]
    # the human-readable form: one line per file with its digit and probability
    text = cli("predict", str(samples[0]), "--grpc", running_server.grpc_target)
    assert text.returncode == EXIT_OK
    assert re.fullmatch(r"\S+digit-0\S*\s+digit \d  p=[01]\.\d{4}\n", text.stdout)


def test_cli_mnist_inputs_status_metadata(running_server, mnist_dir: Path) -> None:
    result = cli("predict", "mnist:t10k:0-9", "--rest", running_server.rest_url, mnist_dir=mnist_dir)
    assert result.returncode == EXIT_OK, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 10 and lines[0].startswith("mnist:t10k:0") and "label 7" in lines[0]
    status = cli("status", "--grpc", running_server.grpc_target)
    assert status.returncode == EXIT_OK and "version 1: AVAILABLE" in status.stdout
    meta = cli("metadata", "--rest", running_server.rest_url, "--json")
    assert meta.returncode == EXIT_OK
    assert json.loads(meta.stdout)["signatures"][contract.SIGNATURE_NAME]["inputs"]


def test_cli_errors_are_one_line_with_documented_exit_codes(running_server, tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not a picture")
    sample = str(next(SAMPLES.glob("digit-7-*")))
    # bad files are reported, the good one is still classified, exit code says "input error"
    mixed = cli(
        "predict", str(tmp_path / "empty.png"), sample, str(tmp_path / "notes.png"),
        "--rest", running_server.rest_url,
    )  # fmt: skip
    assert mixed.returncode == EXIT_INPUT
    assert "digit 7" in mixed.stdout
    errors = mixed.stderr.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors)
    assert "empty file" in errors[0] and "not an image" in errors[1]

    rest, grpc = ("--rest", running_server.rest_url), ("--grpc", running_server.grpc_target)
    for args, code, words in [
        (("status", *rest, "--model-version", "7"), EXIT_REJECTED, "NOT_FOUND"),
        (("predict", sample, *grpc, "--model-name", "x"), EXIT_REJECTED, "NOT_FOUND"),
        (("status", "--grpc", "127.0.0.1:9", "--timeout", "3"), EXIT_UNREACHABLE, "UNAVAILABLE"),
        (("predict", sample, "--rest", "http://127.0.0.1:9"), EXIT_UNREACHABLE, "UNAVAILABLE"),
    ]:
        result = cli(*args)
        assert result.returncode == code, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and words in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    usage = cli("predict", sample)  # neither --rest nor --grpc
    assert usage.returncode == 2
