"""The client library and ``python -m client`` against the real server, over REST and gRPC, in
TF Serving's APIs and in the Open Inference Protocol (V2)."""

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
from client.api import ModelSpec, V2GrpcClient, V2RestClient
from client.cli import EXIT_INPUT, EXIT_OK, EXIT_REJECTED, EXIT_UNREACHABLE, EXIT_USAGE
from client.grpc_client import GrpcClient
from client.rest_client import COLUMNAR_FORMAT, RestClient
from client.v2_rest_client import JSON
from contract import v2
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
        (("predict", sample, *grpc, "--model", "x"), EXIT_REJECTED, "NOT_FOUND"),
        (("status", *rest, "--model-name", "x"), EXIT_REJECTED, "NOT_FOUND"),  # the older spelling
        (("status", "--grpc", "127.0.0.1:9", "--timeout", "3"), EXIT_UNREACHABLE, "UNAVAILABLE"),
        (("predict", sample, "--rest", "http://127.0.0.1:9"), EXIT_UNREACHABLE, "UNAVAILABLE"),
    ]:
        result = cli(*args)
        assert result.returncode == code, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and words in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    usage = cli("predict", sample)  # neither --rest nor --grpc
    assert usage.returncode == 2


# --- the Open Inference Protocol (V2) --------------------------------------------------------------
def _v2_clients(server, spec: ModelSpec | None = None) -> list:
    return [
        V2RestClient(server.rest_url, spec, timeout=10),
        V2RestClient(server.rest_url, spec, timeout=10, tensor_format=JSON),
        V2GrpcClient(server.grpc_target, spec, timeout=10),
    ]


def test_v2_clients_answer_exactly_as_tf_servings_api(running_server, mnist_test) -> None:
    """One data plane: V2 binary, V2 JSON and V2 gRPC give TF Serving gRPC's answer bit for bit."""
    images = mnist_test[0][:32]
    with GrpcClient(running_server.grpc_target, timeout=10) as grpc:
        reference = grpc.predict(images)
    for client in _v2_clients(running_server):
        with client:
            answer = client.predict(images)
            np.testing.assert_array_equal(answer.probabilities, reference.probabilities)
            np.testing.assert_array_equal(answer.digits, reference.digits)
            assert answer.model_version == 1
            assert client.ready() and client.server_ready() and client.server_live()
            assert [(s.version, s.state) for s in client.status()] == [(1, "AVAILABLE")]
            meta = client.metadata()
            signature = meta.signatures[contract.SIGNATURE_NAME]
            assert (meta.name, meta.version, signature.method_name) == ("lenet5", 1, v2.PLATFORM)
            assert signature.inputs["image"].shape == (None, *contract.INPUT_SHAPE)
            assert signature.inputs["image"].dtype == "FP32" and set(signature.outputs) == {
                "probabilities",
                "digit",
            }
            server = client.server_metadata()
            assert server.name == v2.SERVER_NAME and "binary_tensor_data" in server.extensions


def test_v2_errors_are_the_same_family(running_server, mnist_test) -> None:
    image = mnist_test[0][:1]
    for client in _v2_clients(running_server, ModelSpec(version=99)):
        with client, pytest.raises(NotFound) as caught:
            client.predict(image)
        assert caught.value.code == "NOT_FOUND" and "99" in caught.value.message
        assert caught.value.protocol == client.protocol
    for client in _v2_clients(running_server):
        with client, pytest.raises(InvalidArgument) as bad:
            client.predict(np.full_like(image, 255.0))  # bytes, not scaled to [0, 1]
        assert bad.value.http_status == 400 and bad.value.message
    for client in _v2_clients(running_server, ModelSpec(name="resnet")):
        with client:
            with pytest.raises(NotFound):
                client.ready()
            with pytest.raises(NotFound):
                client.metadata()
    with V2GrpcClient("127.0.0.1:9", timeout=3) as absent, pytest.raises(Unavailable):
        absent.server_ready()


def test_cli_over_v2_rest_and_grpc(running_server, mnist_dir: Path) -> None:
    rest, grpc = ("--rest", running_server.rest_url), ("--grpc", running_server.grpc_target)
    documents = {}
    for where, extra in ((rest, ()), (rest, ("--rest-format", "json")), (grpc, ())):
        result = cli(
            "predict", "mnist:t10k:0-9", *where, "--protocol", "v2", "--json", *extra, mnist_dir=mnist_dir
        )
        assert result.returncode == EXIT_OK, result.stderr
        documents[(where[0], *extra)] = document = json.loads(result.stdout)
        assert document["version"] == 1
        assert [r["digit"] for r in document["results"]] == [r["label"] for r in document["results"]]
    assert documents[("--rest",)]["protocol"] == "v2-rest" and documents[("--grpc",)]["protocol"] == "v2-grpc"
    first = [[r["probabilities"] for r in d["results"]] for d in documents.values()]
    assert first[0] == first[1] == first[2]
    meta = cli("metadata", *grpc, "--protocol", "v2")
    assert meta.returncode == EXIT_OK and "input  image: FP32 [-1, 28, 28, 1]" in meta.stdout
    for args, code, words in [
        (("status", *rest, "--protocol", "v2"), EXIT_OK, "version 1: AVAILABLE"),
        (("status", *grpc, "--protocol", "v2", "--model-version", "7"), EXIT_REJECTED, "V2 gRPC NOT_FOUND"),
        (("status", *rest, "--protocol", "v2", "--model-label", "stable"), EXIT_USAGE, "no version labels"),
        (
            ("predict", "mnist:t10k:0", *grpc, "--protocol", "v2", "--rest-format", "json"),
            EXIT_USAGE,
            "not for",
        ),
    ]:
        result = cli(*args, mnist_dir=mnist_dir)
        assert result.returncode == code, (args, result.stderr)
        assert words in result.stdout + result.stderr, (args, result.stdout, result.stderr)
