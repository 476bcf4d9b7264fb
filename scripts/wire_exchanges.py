"""Record the server's answers to a fixed corpus of REST and gRPC requests, and compare recordings.

The wire-identity check for refactors that must change no behaviour: record before, record after,
compare. Every exchange keeps what a client sees: REST status line, headers (less ``Date``) and
body bytes; gRPC status code, details and response bytes. Protobuf map fields may serialise in
any order, so gRPC answers that differ in bytes are compared again as deterministically
re-serialised messages.

    python scripts/wire_exchanges.py record before.json --model-base-path pretrained/lenet5
    python scripts/wire_exchanges.py record after.json --model-base-path pretrained/lenet5
    python scripts/wire_exchanges.py compare before.json after.json
"""

from __future__ import annotations

import argparse
import base64
import gzip
import http.client
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np

import contract
from contract import v2
from contract.proto import digits_tfserving_pb2 as tfs
from contract.proto import digits_v2_pb2 as v2pb
from loadtest.server import start_server

ROOT = Path(__file__).resolve().parents[1]
IMAGE = np.asarray(
    json.loads((ROOT / "docs/requests/digit-7-mnist-t10k-0.json").read_text())["instances"], np.float32
)
NAME = contract.MODEL_NAME
HEALTH_CHECK_RPC = "/grpc.health.v1.Health/Check"


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def _rest_corpus() -> Iterator[tuple[str, str, dict[str, str], bytes]]:
    """(method, path, headers, body) of every REST exchange."""
    pixels = IMAGE.tolist()
    j = {"Content-Type": "application/json"}
    for path in (
        "/",
        "/index.html",
        "/healthz",
        "/readyz",
        "/openapi.yaml",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/nope",
        f"/v1/models/{NAME}",
        f"/v1/models/{NAME}/versions/1",
        f"/v1/models/{NAME}/versions/7",
        f"/v1/models/{NAME}/labels/stable",
        f"/v1/models/{NAME}/metadata",
        f"/v1/models/{NAME}/versions/x",
        "/v1/models/other",
        f"/v1/models/{NAME}:predict",
        f"/v2/models/{NAME}",
        f"/v2/models/{NAME}/versions/1",
        f"/v2/models/{NAME}/versions/9",
        f"/v2/models/{NAME}/ready",
        f"/v2/models/{NAME}/config",
        f"/v2/models/{NAME}/versions/1/config",
        "/v2/models/other/ready",
        f"/v2/models/{NAME}/infer",
        f"/v2/models/{NAME}/bogus",
        "/v2/models/",
    ):
        yield "GET", path, {}, b""
    predict = f"/v1/models/{NAME}:predict"
    bodies = [
        {"instances": pixels},
        {"inputs": pixels},
        {"instances": [{"image": pixels[0]}]},
        {"inputs": {"image": pixels}},
        {"signature_name": "serving_default", "instances": pixels},
        {"signature_name": "nope", "instances": pixels},
        {"instances": pixels * 3},
        {"instances": [[[0.0]]]},
        {"instances": [[[[2.0]] * 28] * 28]},
        {"instances": []},
        {"instances": pixels, "inputs": pixels},
        {},
        [],
        {"instances": "x"},
    ]
    for body in bodies:
        yield "POST", predict, j, _json(body)
    for raw in (b"", b"{", b"not json", b"\xff\xfe", b'{"instances": [NaN]}'):
        yield "POST", predict, j, raw
    for path in (
        f"/v1/models/{NAME}/versions/1:predict",
        f"/v1/models/{NAME}/versions/3:predict",
        f"/v1/models/{NAME}/labels/canary:predict",
        "/v1/models/other:predict",
        f"/v1/models/{NAME}/metadata",
        f"/v1/models/{NAME}",
    ):
        yield "POST", path, j, _json({"instances": pixels})
    yield from _v2_rest_corpus(pixels)


def _v2_rest_corpus(pixels: list) -> Iterator[tuple[str, str, dict[str, str], bytes]]:
    infer = v2.infer_path(NAME)
    j = {"Content-Type": "application/json"}
    flat = IMAGE.reshape(-1).tolist()
    tensor = {"name": "image", "shape": [1, 28, 28, 1], "datatype": "FP32", "data": flat}
    requests = [
        {"id": "a", "inputs": [tensor]},
        {"inputs": [{**tensor, "data": pixels}]},
        {"inputs": [tensor], "outputs": [{"name": "digit"}]},
        {"inputs": [tensor], "outputs": [{"name": "nope"}]},
        {"inputs": [tensor], "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]},
        {"inputs": [tensor], "parameters": {"binary_data_output": True}},
        {"inputs": [{**tensor, "datatype": "INT64"}]},
        {"inputs": [{**tensor, "datatype": "BOGUS"}]},
        {"inputs": [{**tensor, "shape": [2, 28, 28, 1]}]},
        {"inputs": [{**tensor, "name": "x"}]},
        {"inputs": []},
        {},
        {"inputs": [tensor], "parameters": {"timeout": -1}},
        {"inputs": [tensor], "parameters": {"shared_memory_region": "r"}},
    ]
    for body in requests:
        yield "POST", infer, j, _json(body)
    for path in (
        v2.infer_path(NAME, 1),
        v2.infer_path(NAME, 5),
        v2.infer_path("other"),
        v2.ready_path(NAME),
        v2.infer_path(NAME, "x"),
    ):
        yield "POST", path, j, _json({"inputs": [tensor]})
    header = _json(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1, 28, 28, 1],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": IMAGE.nbytes},
                }
            ]
        }
    )
    binary = {"Content-Type": "application/octet-stream", v2.HEADER_CONTENT_LENGTH: str(len(header))}
    yield "POST", infer, binary, header + IMAGE.tobytes()
    yield "POST", infer, binary, header + IMAGE.tobytes()[:-4]
    yield "POST", infer, {**binary, v2.HEADER_CONTENT_LENGTH: "-1"}, header + IMAGE.tobytes()
    yield (
        "POST",
        infer,
        {**j, "Content-Encoding": "gzip"},
        gzip.compress(_json({"inputs": [tensor]}), mtime=0),
    )
    yield "POST", infer, {**j, "Content-Encoding": "br"}, _json({"inputs": [tensor]})
    for raw in (b"", b"{", b"[1]"):
        yield "POST", infer, j, raw


def _grpc_corpus() -> Iterator[tuple[str, bytes, type]]:
    """(method path, request bytes, response message class) of every gRPC exchange."""
    content = tfs.TensorProto(dtype=1, tensor_content=IMAGE.tobytes())
    content.tensor_shape.dim.extend(tfs.TensorShapeProto.Dim(size=s) for s in IMAGE.shape)
    typed = tfs.TensorProto(dtype=1, float_val=IMAGE.reshape(-1).tolist())
    typed.tensor_shape.CopyFrom(content.tensor_shape)
    wrong = tfs.TensorProto(dtype=9, tensor_content=IMAGE.tobytes())
    wrong.tensor_shape.CopyFrom(content.tensor_shape)
    specs = [
        tfs.ModelSpec(name=NAME),
        tfs.ModelSpec(name=NAME, signature_name="serving_default"),
        tfs.ModelSpec(name="other"),
        tfs.ModelSpec(name=NAME, signature_name="nope"),
        tfs.ModelSpec(name=NAME, version_label="stable"),
    ]
    specs[1].version.value = 1
    for spec in specs:
        for tensor in (content, typed):
            yield (
                contract.PREDICT_RPC,
                tfs.PredictRequest(model_spec=spec, inputs={"image": tensor}).SerializeToString(
                    deterministic=True
                ),
                tfs.PredictResponse,
            )
        yield (
            contract.GET_MODEL_METADATA_RPC,
            tfs.GetModelMetadataRequest(
                model_spec=spec, metadata_field=["signature_def"]
            ).SerializeToString(),
            tfs.GetModelMetadataResponse,
        )
        yield (
            contract.GET_MODEL_STATUS_RPC,
            tfs.GetModelStatusRequest(model_spec=spec).SerializeToString(),
            tfs.GetModelStatusResponse,
        )
    for request in (
        tfs.PredictRequest(model_spec=specs[0], inputs={"image": wrong}),
        tfs.PredictRequest(model_spec=specs[0], inputs={"x": content}),
        tfs.PredictRequest(model_spec=specs[0], inputs={"image": content}, output_filter=["digit"]),
        tfs.PredictRequest(model_spec=specs[0], inputs={"image": content}, output_filter=["zz"]),
    ):
        yield contract.PREDICT_RPC, request.SerializeToString(deterministic=True), tfs.PredictResponse
    yield contract.PREDICT_RPC, b"\xff\xff", tfs.PredictResponse
    yield from _v2_grpc_corpus()
    yield HEALTH_CHECK_RPC, b"", v2pb.ServerLiveResponse  # bytes compared; the class only re-parses


def _v2_grpc_corpus() -> Iterator[tuple[str, bytes, type]]:
    raw = v2pb.ModelInferRequest.InferInputTensor(name="image", datatype="FP32", shape=[1, 28, 28, 1])
    typed = v2pb.ModelInferRequest.InferInputTensor(name="image", datatype="FP32", shape=[1, 28, 28, 1])
    typed.contents.fp32_contents.extend(IMAGE.reshape(-1).tolist())
    requests = [
        v2pb.ModelInferRequest(model_name=NAME, id="r", inputs=[raw], raw_input_contents=[IMAGE.tobytes()]),
        v2pb.ModelInferRequest(model_name=NAME, model_version="1", inputs=[typed]),
        v2pb.ModelInferRequest(
            model_name=NAME,
            inputs=[typed],
            outputs=[v2pb.ModelInferRequest.InferRequestedOutputTensor(name="digit")],
        ),
        v2pb.ModelInferRequest(
            model_name=NAME,
            inputs=[typed],
            outputs=[v2pb.ModelInferRequest.InferRequestedOutputTensor(name="nope")],
        ),
        v2pb.ModelInferRequest(model_name=NAME, inputs=[raw]),
        v2pb.ModelInferRequest(model_name="other", inputs=[typed]),
        v2pb.ModelInferRequest(model_name=NAME, model_version="4", inputs=[typed]),
        v2pb.ModelInferRequest(model_name=NAME, model_version="x", inputs=[typed]),
    ]
    for request in requests:
        yield v2.MODEL_INFER_RPC, request.SerializeToString(deterministic=True), v2pb.ModelInferResponse
    for name, version in ((NAME, ""), (NAME, "1"), (NAME, "8"), ("other", "")):
        yield (
            v2.MODEL_READY_RPC,
            v2pb.ModelReadyRequest(name=name, version=version).SerializeToString(),
            v2pb.ModelReadyResponse,
        )
        yield (
            v2.MODEL_METADATA_RPC,
            v2pb.ModelMetadataRequest(name=name, version=version).SerializeToString(),
            v2pb.ModelMetadataResponse,
        )
        yield (
            v2.MODEL_CONFIG_RPC,
            v2pb.ModelConfigRequest(name=name, version=version).SerializeToString(),
            v2pb.ModelConfigResponse,
        )
    yield v2.SERVER_LIVE_RPC, b"", v2pb.ServerLiveResponse
    yield v2.SERVER_READY_RPC, b"", v2pb.ServerReadyResponse
    yield v2.SERVER_METADATA_RPC, b"", v2pb.ServerMetadataResponse


def _rest_exchange(rest_port: int, method: str, path: str, headers: dict[str, str], body: bytes) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=30)
    try:
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        kept = [[k, v] for k, v in response.getheaders() if k.lower() not in ("date", "server")]
        return {
            "status": response.status,
            "reason": response.reason,
            "headers": kept,
            "body": base64.b64encode(response.read()).decode(),
        }
    finally:
        connection.close()


def _grpc_exchange(channel: grpc.Channel, method: str, request: bytes) -> dict:
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    try:
        answer = call(request, timeout=30)
        return {"code": "OK", "body": base64.b64encode(answer).decode()}
    except grpc.RpcError as error:
        return {"code": error.code().name, "details": error.details()}


def record(out: Path, model_base_path: Path, server_args: str, source: Path | None) -> None:
    exchanges = []
    with tempfile.TemporaryDirectory() as scratch:
        server = start_server(model_base_path, NAME, Path(scratch) / "server.log", server_args, source=source)
        try:
            rest_port = int(server.rest_url.rsplit(":", 1)[1])
            for method, path, headers, body in _rest_corpus():
                answer = _rest_exchange(rest_port, method, path, headers, body)
                exchanges.append({"request": f"REST {method} {path} {body[:60]!r}", **answer})
            with grpc.insecure_channel(server.grpc_target) as channel:
                for method, request, message in _grpc_corpus():
                    answer = _grpc_exchange(channel, method, request)
                    exchanges.append(
                        {"request": f"gRPC {method} {request[:30]!r}", "message": message.__name__, **answer}
                    )
        finally:
            server.stop()
    out.write_text(json.dumps(exchanges, indent=1))
    print(f"{len(exchanges)} exchanges recorded in {out}")


def _canonical(exchange: dict) -> dict:
    """An answer with its maps in one order: a gRPC message re-serialised deterministically, a
    JSON body parsed (TF Serving's REST metadata is a protobuf map rendered as JSON)."""
    if "status" in exchange:
        try:
            return {**exchange, "body": json.loads(base64.b64decode(exchange["body"]))}
        except ValueError:
            return exchange
    if exchange.get("code") != "OK" or "message" not in exchange:
        return exchange
    message = getattr(tfs, exchange["message"], None) or getattr(v2pb, exchange["message"])
    parsed = message.FromString(base64.b64decode(exchange["body"]))
    if isinstance(parsed, tfs.GetModelMetadataResponse):  # the signature map sits in an Any
        for packed in parsed.metadata.values():
            inner = tfs.SignatureDefMap.FromString(packed.value)
            packed.value = inner.SerializeToString(deterministic=True)
    return {**exchange, "body": base64.b64encode(parsed.SerializeToString(deterministic=True)).decode()}


def compare(before: Path, after: Path) -> int:
    old, new = json.loads(before.read_text()), json.loads(after.read_text())
    if len(old) != len(new):
        print(f"different corpora: {len(old)} vs {len(new)} exchanges")
        return 1
    differ = [(a, b) for a, b in zip(old, new, strict=True) if a != b and _canonical(a) != _canonical(b)]
    reordered = sum(a != b for a, b in zip(old, new, strict=True)) - len(differ)
    for a, b in differ:
        print(f"DIFFERS: {a['request']}\n  before: {json.dumps(a)[:400]}\n  after:  {json.dumps(b)[:400]}")
    print(
        f"{len(old)} exchanges: {len(old) - len(differ) - reordered} byte-identical, "
        f"{reordered} identical but for map order, {len(differ)} different"
    )
    return 1 if differ else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True)
    recording = commands.add_parser("record", help="start the server, send the corpus, write the answers")
    recording.add_argument("out", type=Path)
    recording.add_argument("--model-base-path", type=Path, default=ROOT / "pretrained" / NAME)
    recording.add_argument("--server-args", default="--access_log false", help="extra server flags")
    recording.add_argument("--source", type=Path, help="run the server from this source tree (a baseline)")
    recording.set_defaults(func=lambda a: record(a.out, a.model_base_path, a.server_args, a.source) or 0)
    comparing = commands.add_parser("compare", help="compare two recordings")
    comparing.add_argument("before", type=Path)
    comparing.add_argument("after", type=Path)
    comparing.set_defaults(func=lambda a: compare(a.before, a.after))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
