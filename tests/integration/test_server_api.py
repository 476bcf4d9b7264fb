"""The real server process: official TF Serving stubs, REST/gRPC/ORT parity, metrics, bad input.

Uses the session ``running_server`` (python -m serving over the model exported by training).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import json_format
from prometheus_client.parser import text_string_to_metric_families

from contract import (
    GET_MODEL_METADATA_RPC,
    GET_MODEL_STATUS_RPC,
    INPUT_NAME,
    INPUT_SHAPE,
    LIVENESS_PATH,
    MAX_BATCH_SIZE,
    METADATA_FIELD_SIGNATURE_DEF,
    METRICS_ALIAS_PATH,
    METRICS_PATH,
    MODEL_NAME,
    ONNX_FILENAME,
    OUTPUT_DIGIT,
    OUTPUT_NAMES,
    OUTPUT_PROBABILITIES,
    PREDICT_RPC,
    READINESS_PATH,
    SIGNATURE_DEF_MAP_TYPE_URL,
    SIGNATURE_NAME,
    model_versions,
    version_path,
)
from contract.codecs import make_ndarray, make_tensor_proto
from contract.proto import digits_tfserving_pb2 as pb
from serving.settings import Settings

SAMPLE_EVERY = Settings.quality_sample_every  # the server's default


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, dict | str]:
    request = urllib.request.Request(
        url, data=body, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, data = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, data = error.code, error.read()
    try:
        return status, json.loads(data)
    except ValueError:
        return status, data.decode()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(7).random((5, *INPUT_SHAPE), dtype=np.float32)


@pytest.fixture(scope="module")
def reference(running_server, images: np.ndarray) -> dict[str, np.ndarray]:
    """In-process ONNX Runtime on the same model file."""
    base = Path(running_server.model_base_path)
    model = version_path(base, model_versions(base)[-1]) / ONNX_FILENAME
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {INPUT_NAME: images}), strict=True))


def test_official_tf_serving_stubs(running_server, images, reference) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    # Our protos are loaded in this same process: both descriptor pools must coexist.
    assert pb.PredictRequest.DESCRIPTOR.full_name != predict_pb2.PredictRequest.DESCRIPTOR.full_name
    with grpc.insecure_channel(running_server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL_NAME
        request.model_spec.signature_name = SIGNATURE_NAME
        request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(images))
        response = stub.Predict(request, timeout=30)
        # Typed fields, as TF Serving answers (not tensor_content).
        assert response.outputs[OUTPUT_PROBABILITIES].tensor_content == b""
        assert len(response.outputs[OUTPUT_PROBABILITIES].float_val) == images.shape[0] * 10
        assert list(response.outputs[OUTPUT_DIGIT].int64_val) == reference[OUTPUT_DIGIT].tolist()
        np.testing.assert_array_equal(
            tf.make_ndarray(response.outputs[OUTPUT_DIGIT]), reference[OUTPUT_DIGIT]
        )
        np.testing.assert_allclose(
            tf.make_ndarray(response.outputs[OUTPUT_PROBABILITIES]),
            reference[OUTPUT_PROBABILITIES],
            rtol=0,
            atol=1e-6,
        )
        meta_request = get_model_metadata_pb2.GetModelMetadataRequest()
        meta_request.model_spec.name = MODEL_NAME
        meta_request.metadata_field.append("signature_def")
        meta = stub.GetModelMetadata(meta_request, timeout=30)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        assert meta.metadata["signature_def"].Unpack(signatures)
        signature = signatures.signature_def[SIGNATURE_NAME]
        assert signature.inputs[INPUT_NAME].dtype == tf.float32.as_datatype_enum
        assert set(signature.outputs) == set(OUTPUT_NAMES)
        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = MODEL_NAME
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request, timeout=30)
        assert status.model_version_status[-1].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


def test_rest_row_columnar_grpc_and_runtime_agree(running_server, images, reference) -> None:
    url = f"{running_server.rest_url}/v1/models/{MODEL_NAME}:predict"
    status, row = http("POST", url, json.dumps({"instances": images.tolist()}).encode())
    assert status == 200, row
    status, columnar = http("POST", url, json.dumps({"inputs": images.reshape(5, -1).tolist()}).encode())
    assert status == 200, columnar
    with grpc.insecure_channel(running_server.grpc_target) as channel:
        request = pb.PredictRequest(model_spec=pb.ModelSpec(name=MODEL_NAME))
        request.inputs[INPUT_NAME].CopyFrom(make_tensor_proto(images, use_tensor_content=True))
        response = channel.unary_unary(
            PREDICT_RPC,
            request_serializer=pb.PredictRequest.SerializeToString,
            response_deserializer=pb.PredictResponse.FromString,
        )(request, timeout=30)
    grpc_probabilities = make_ndarray(response.outputs[OUTPUT_PROBABILITIES])
    row_probabilities = np.asarray([p[OUTPUT_PROBABILITIES] for p in row["predictions"]], np.float32)
    columnar_probabilities = np.asarray(columnar["outputs"][OUTPUT_PROBABILITIES], np.float32)
    for probabilities in (grpc_probabilities, row_probabilities, columnar_probabilities):
        np.testing.assert_array_equal(probabilities, reference[OUTPUT_PROBABILITIES])
    assert [p[OUTPUT_DIGIT] for p in row["predictions"]] == reference[OUTPUT_DIGIT].tolist()
    assert columnar["outputs"][OUTPUT_DIGIT] == reference[OUTPUT_DIGIT].tolist()


def test_predict_answer_bytes_are_what_protobuf_writes(running_server, images, reference) -> None:
    """The server writes its PredictResponse bytes directly: byte for byte protobuf's own encoding."""
    from serving.protocols.tfserving.grpc_proto import predict_response

    base = Path(running_server.model_base_path)
    request = pb.PredictRequest(model_spec=pb.ModelSpec(name=MODEL_NAME))
    request.inputs[INPUT_NAME].CopyFrom(make_tensor_proto(images, use_tensor_content=True))
    with grpc.insecure_channel(running_server.grpc_target) as channel:
        raw = channel.unary_unary(PREDICT_RPC, request_serializer=pb.PredictRequest.SerializeToString)
        wire = raw(request, timeout=30)  # no deserializer: the bytes as they came
    expected = predict_response(MODEL_NAME, model_versions(base)[-1], reference)
    assert wire == expected.SerializeToString(deterministic=True)


def _proto_json(message) -> dict:
    return json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )


def test_rest_status_and_metadata_are_the_json_of_the_grpc_answers(running_server) -> None:
    """Both adapters encode the same data-plane answer: REST prints the gRPC message as JSON."""
    rest = f"{running_server.rest_url}/v1/models/{MODEL_NAME}"
    status_code, rest_status = http("GET", rest)
    assert status_code == 200, rest_status
    status_code, rest_metadata = http("GET", f"{rest}/metadata")
    assert status_code == 200, rest_metadata
    with grpc.insecure_channel(running_server.grpc_target) as channel:
        status = channel.unary_unary(
            GET_MODEL_STATUS_RPC,
            request_serializer=pb.GetModelStatusRequest.SerializeToString,
            response_deserializer=pb.GetModelStatusResponse.FromString,
        )(pb.GetModelStatusRequest(model_spec=pb.ModelSpec(name=MODEL_NAME)), timeout=30)
        request = pb.GetModelMetadataRequest(model_spec=pb.ModelSpec(name=MODEL_NAME))
        request.metadata_field.append(METADATA_FIELD_SIGNATURE_DEF)
        metadata = channel.unary_unary(
            GET_MODEL_METADATA_RPC,
            request_serializer=pb.GetModelMetadataRequest.SerializeToString,
            response_deserializer=pb.GetModelMetadataResponse.FromString,
        )(request, timeout=30)
    assert rest_status == _proto_json(status)
    packed = metadata.metadata[METADATA_FIELD_SIGNATURE_DEF]
    assert packed.type_url == SIGNATURE_DEF_MAP_TYPE_URL
    signatures = pb.SignatureDefMap.FromString(packed.value)
    assert rest_metadata == {
        "model_spec": _proto_json(metadata.model_spec),
        "metadata": {METADATA_FIELD_SIGNATURE_DEF: _proto_json(signatures)},
    }
    assert rest_metadata["model_spec"]["version"] == str(model_versions(running_server.model_base_path)[-1])


def test_access_log_has_one_shape_per_api_and_no_probes(running_server, images) -> None:
    marker = f"/v1/models/{MODEL_NAME}/labels/access-log-marker"
    assert http("GET", f"{running_server.rest_url}{marker}")[0] == 404
    with grpc.insecure_channel(running_server.grpc_target) as channel:
        channel.unary_unary(
            GET_MODEL_STATUS_RPC,
            request_serializer=pb.GetModelStatusRequest.SerializeToString,
            response_deserializer=pb.GetModelStatusResponse.FromString,
        )(pb.GetModelStatusRequest(model_spec=pb.ModelSpec(name=MODEL_NAME)), timeout=30)
    deadline = time.monotonic() + 10
    while True:
        # split on newlines only: JSON strings may hold U+2028, U+0085... (fuzzed paths), which
        # str.splitlines() would also split on
        log_lines = running_server.log().split("\n")
        lines = [json.loads(line) for line in log_lines if line.startswith('{"api"')]
        rest = [x for x in lines if x["api"] == "rest" and x["path"] == marker]
        grpc_lines = [x for x in lines if x["api"] == "grpc" and x["method"] == "status"]
        if (rest and grpc_lines) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    keys = ["api", "protocol", "model", "version"]
    assert rest and list(rest[-1]) == [*keys, "method", "path", "status", "ms"], rest
    assert (rest[-1]["method"], rest[-1]["status"]) == ("GET", 404)
    assert (rest[-1]["model"], rest[-1]["version"]) == (MODEL_NAME, "")  # no such label: no version
    assert grpc_lines and list(grpc_lines[-1]) == [*keys, "method", "code", "ms"], grpc_lines
    assert (grpc_lines[-1]["code"], grpc_lines[-1]["model"]) == ("OK", MODEL_NAME)
    probes = {LIVENESS_PATH, READINESS_PATH, METRICS_PATH, METRICS_ALIAS_PATH}
    assert not [x for x in lines if x.get("path") in probes]  # wait_ready polled /readyz many times


def test_metrics_parse_with_prometheus_parser(running_server, images) -> None:
    http(
        "POST",
        f"{running_server.rest_url}/v1/models/{MODEL_NAME}:predict",
        json.dumps({"instances": images[:1].tolist()}).encode(),
    )
    for path in (METRICS_PATH, METRICS_ALIAS_PATH):
        with urllib.request.urlopen(running_server.rest_url + path, timeout=30) as response:
            text = response.read().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        # (serving_model_load_failures appears once a load fails: see test_server_lifecycle.)
        assert {
            "serving_requests",
            "serving_request_latency_seconds",
            "serving_model_batch_size",
            "serving_model_version_available",
        } <= set(families)
        predicts = [
            s
            for s in families["serving_requests"].samples
            if s.labels.get("api") == "rest"
            and s.labels.get("method") == "predict"
            and s.labels.get("code") == "OK"
            and s.name.endswith("_total")
        ]
        assert predicts and predicts[0].value >= 1
        available = [s for s in families["serving_model_version_available"].samples if s.value == 1]
        assert available


def _scrape(running_server) -> dict:
    with urllib.request.urlopen(running_server.rest_url + METRICS_PATH, timeout=30) as response:
        return {f.name: f for f in text_string_to_metric_families(response.read().decode())}


def test_predictions_reach_the_quality_metrics_of_every_worker(running_server, images) -> None:
    """Each worker writes its model-quality tallies within a second: a scrape then shows every
    image of a predict, with the served model and version on each series."""
    version = str(model_versions(running_server.model_base_path)[-1])

    def images_counted() -> float:
        family = _scrape(running_server).get("serving_predictions")
        return sum(s.value for s in family.samples if s.name.endswith("_total")
                   and (s.labels["model"], s.labels["version"]) == (MODEL_NAME, version)) if family else 0.0

    def settled() -> float:
        """The count once no earlier test's tallies are still on their way (flushed each second)."""
        count, deadline = images_counted(), time.monotonic() + 15
        while time.monotonic() < deadline:
            time.sleep(1.5)
            count, previous = images_counted(), count
            if count == previous:
                break
        return count

    # Input statistics cover every K-th image a worker answers (--quality_sample_every): one
    # request of several K images reaches one worker, so its histograms get at least two.
    batch = np.concatenate([images] * 4)
    before = settled()
    status, _ = http("POST", f"{running_server.rest_url}/v1/models/{MODEL_NAME}:predict",
                     json.dumps({"instances": batch.tolist()}).encode())
    assert status == 200
    deadline = time.monotonic() + 10
    while images_counted() < before + len(batch) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert settled() == before + len(batch)
    families = _scrape(running_server)
    for name in ("serving_prediction_confidence", "serving_input_ink_fraction",
                 "serving_input_mean_intensity", "serving_input_center_offset_pixels"):
        counts = [s for s in families[name].samples if s.name == f"{name}_count"
                  and (s.labels["model"], s.labels["version"]) == (MODEL_NAME, version)]
        least = len(batch) if name == "serving_prediction_confidence" else len(batch) // SAMPLE_EVERY
        assert counts and counts[0].value >= least, name
    predicts = [s for s in families["serving_requests"].samples if s.name.endswith("_total")
                and s.labels["method"] == "predict" and s.labels["code"] == "OK"]
    assert {(s.labels["model"], s.labels["version"]) for s in predicts} == {(MODEL_NAME, version)}


REST_CORPUS: list[tuple[str, str, bytes | None, int]] = [
    # (method, path suffix after /v1/models/, body, expected HTTP status)
    ("POST", f"{MODEL_NAME}:predict", b"", 400),
    ("POST", f"{MODEL_NAME}:predict", b"{", 400),
    ("POST", f"{MODEL_NAME}:predict", b"null", 400),
    ("POST", f"{MODEL_NAME}:predict", b"[1, 2]", 400),
    ("POST", f"{MODEL_NAME}:predict", b"{}", 400),
    ("POST", f"{MODEL_NAME}:predict", b'{"instances": []}', 400),
    ("POST", f"{MODEL_NAME}:predict", b'{"instances": 5}', 400),
    ("POST", f"{MODEL_NAME}:predict", b'{"instances": "abc"}', 400),
    ("POST", f"{MODEL_NAME}:predict", b'{"instances": [["a", "b"]]}', 400),
    ("POST", f"{MODEL_NAME}:predict", b'{"instances": [[0.1, 0.2]]}', 400),
    ("POST", f"{MODEL_NAME}:predict", b'{"instances": [[0.1], [0.2, 0.3]]}', 400),
    ("POST", f"{MODEL_NAME}:predict", b'{"instances": [null]}', 400),
    ("POST", f"{MODEL_NAME}:predict", b'{"instances": [true]}', 400),
    ("POST", f"{MODEL_NAME}:predict", b'{"instances": [{"pixels": [0.1]}]}', 400),
    ("POST", f"{MODEL_NAME}:predict", b'{"inputs": {"pixels": [[0.1]]}}', 400),
    ("POST", f"{MODEL_NAME}:predict", b'{"inputs": [], "instances": []}', 400),
    ("POST", f"{MODEL_NAME}:predict", b'{"instances": [[0.1]], "extra": 1}', 400),
    ("POST", f"{MODEL_NAME}:predict", b'{"instances": [[0.1]], "signature_name": 5}', 400),
    ("POST", f"{MODEL_NAME}:predict", json.dumps({"instances": [[255.0] * 784]}).encode(), 400),
    ("POST", f"{MODEL_NAME}:predict", json.dumps({"instances": [[-0.5] * 784]}).encode(), 400),
    ("POST", f"{MODEL_NAME}:predict", b'{"instances": [[' + b",".join([b"1e999"] * 784) + b"]]}", 400),
    ("POST", f"{MODEL_NAME}:predict", json.dumps({"inputs": [[0.5] * 784] * 1025}).encode(), 400),
    (
        "POST",
        f"{MODEL_NAME}:predict",
        json.dumps({"instances": [[0.5] * 784], "signature_name": "nope"}).encode(),
        400,
    ),
    ("POST", f"{MODEL_NAME}/versions/abc:predict", json.dumps({"instances": [[0.5] * 784]}).encode(), 400),
    ("POST", f"{MODEL_NAME}/versions/999:predict", json.dumps({"instances": [[0.5] * 784]}).encode(), 404),
    ("POST", f"{MODEL_NAME}/labels/nope:predict", json.dumps({"instances": [[0.5] * 784]}).encode(), 404),
    ("POST", "nosuchmodel:predict", json.dumps({"instances": [[0.5] * 784]}).encode(), 404),
    ("POST", f"{MODEL_NAME}:explain", b"{}", 400),
    ("GET", f"{MODEL_NAME}:predict", None, 405),
    ("POST", f"{MODEL_NAME}/metadata", b"{}", 405),
    ("GET", f"{MODEL_NAME}/versions/999", None, 404),
    ("GET", "nosuchmodel/metadata", None, 404),
    ("GET", f"{MODEL_NAME}/versions/1/extra/bits", None, 400),
    # (the 413 for an oversized body: test_oversized_body_is_413)
]


@pytest.mark.parametrize(("method", "suffix", "body", "expected"), REST_CORPUS)
def test_malformed_rest_requests(running_server, method, suffix, body, expected) -> None:
    status, reply = http(method, f"{running_server.rest_url}/v1/models/{suffix}", body)
    assert status == expected, reply
    assert isinstance(reply, dict) and reply["error"], reply


def test_oversized_body_is_413(running_server) -> None:
    """A body over --max_request_bytes (32 MiB default) is refused from its Content-Length."""
    import http.client
    from urllib.parse import urlparse

    url = urlparse(running_server.rest_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.putrequest("POST", f"/v1/models/{MODEL_NAME}:predict")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(33 * 1024 * 1024))
    conn.endheaders()
    conn.send(b'{"instances": [' + b"0," * 1000)  # the server answers before the rest arrives
    response = conn.getresponse()
    assert response.status == 413
    assert "larger" in json.loads(response.read())["error"]
    conn.close()


def _grpc_corpus() -> list[tuple[str, pb.PredictRequest, grpc.StatusCode]]:
    def request(array=None, name=MODEL_NAME, key=INPUT_NAME, **spec) -> pb.PredictRequest:
        r = pb.PredictRequest(model_spec=pb.ModelSpec(name=name, **spec))
        if array is not None:
            r.inputs[key].CopyFrom(make_tensor_proto(array, use_tensor_content=True))
        return r

    good = np.zeros((1, *INPUT_SHAPE), np.float32)
    wrong_count = request(good)
    wrong_count.inputs[INPUT_NAME].tensor_content = b"\x00" * 12
    string_tensor = pb.PredictRequest(model_spec=pb.ModelSpec(name=MODEL_NAME))
    string_tensor.inputs[INPUT_NAME].dtype = pb.DT_STRING
    string_tensor.inputs[INPUT_NAME].string_val.append(b"x")
    bad_filter = request(good)
    bad_filter.output_filter.append("logits")
    unknown_rank = request(good)
    unknown_rank.inputs[INPUT_NAME].tensor_shape.unknown_rank = True
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    return [
        ("no model name", request(good, name=""), invalid),
        ("no inputs", request(), invalid),
        ("wrong input name", request(good, key="pixels"), invalid),
        ("wrong shape", request(np.zeros((1, 27, 27, 1), np.float32)), invalid),
        ("bytes count", wrong_count, invalid),
        ("string dtype", string_tensor, invalid),
        ("pixels 0-255", request(np.full((1, *INPUT_SHAPE), 255, np.float32)), invalid),
        ("NaN", request(np.full((1, *INPUT_SHAPE), np.nan, np.float32)), invalid),
        ("unknown output", bad_filter, invalid),
        ("unknown rank", unknown_rank, invalid),
        ("bad signature", request(good, signature_name="nope"), grpc.StatusCode.FAILED_PRECONDITION),
        ("unknown model", request(good, name="other"), grpc.StatusCode.NOT_FOUND),
        ("unknown version", request(good, version={"value": 999}), grpc.StatusCode.NOT_FOUND),
        ("unknown label", request(good, version_label="nope"), grpc.StatusCode.NOT_FOUND),
    ]


def test_malformed_grpc_requests_and_server_stays_healthy(running_server) -> None:
    corpus = _grpc_corpus()
    assert len(corpus) + len(REST_CORPUS) >= 30
    with grpc.insecure_channel(running_server.grpc_target) as channel:
        predict = channel.unary_unary(
            PREDICT_RPC,
            request_serializer=pb.PredictRequest.SerializeToString,
            response_deserializer=pb.PredictResponse.FromString,
        )
        for label, request, code in corpus:
            with pytest.raises(grpc.RpcError) as info:
                predict(request, timeout=30)
            assert info.value.code() == code, (label, info.value.details())
            assert info.value.details(), label
        # Garbage bytes on the wire: a decoding failure, never a crash.
        raw = channel.unary_unary(PREDICT_RPC)
        with pytest.raises(grpc.RpcError) as info:
            raw(b"\xff\xff\xff\xff", timeout=30)
        assert (
            info.value.code() != grpc.StatusCode.UNKNOWN or "deserial" in (info.value.details() or "").lower()
        )
        # An expired deadline is DEADLINE_EXCEEDED, and the server still answers afterwards.
        # (a full batch: grpcio may round a 1 us deadline up to its timer's resolution, which a
        # single image on an idle loopback can meet; 1024 images take milliseconds. A few
        # tries: every failure must be DEADLINE_EXCEEDED, and at least one must fail)
        valid = pb.PredictRequest(model_spec=pb.ModelSpec(name=MODEL_NAME))
        batch = np.zeros((MAX_BATCH_SIZE, *INPUT_SHAPE), np.float32)
        valid.inputs[INPUT_NAME].CopyFrom(make_tensor_proto(batch, use_tensor_content=True))
        codes = []
        for _ in range(5):
            try:
                predict(valid, timeout=0.000001)
            except grpc.RpcError as error:
                codes.append(error.code())
        assert codes and set(codes) == {grpc.StatusCode.DEADLINE_EXCEEDED}, codes
        status = channel.unary_unary(
            GET_MODEL_STATUS_RPC,
            request_serializer=pb.GetModelStatusRequest.SerializeToString,
            response_deserializer=pb.GetModelStatusResponse.FromString,
        )
        reply = status(pb.GetModelStatusRequest(model_spec=pb.ModelSpec(name=MODEL_NAME)), timeout=30)
        assert reply.model_version_status[-1].state == pb.ModelVersionStatus.AVAILABLE
    assert http("GET", running_server.rest_url + LIVENESS_PATH)[0] == 200
    assert running_server.is_ready()
