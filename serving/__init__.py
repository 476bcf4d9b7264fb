"""digits model server: TensorFlow Serving's REST and gRPC APIs and the Open Inference Protocol
(KServe V2 / Triton) over ONNX Runtime.

Subpackages by job, dependencies pointing down the list (checked by import-linter contracts in
pyproject.toml):

- ``process/``        the supervisor and its workers; signals (``__main__`` starts it)
- ``rest/``, ``grpc/``  the adapters: decode, call the data plane, encode; one error
  translation each
- ``protocols/``      the codecs of ``tfserving`` and ``v2``, between wire messages and arrays
- ``core/``           runtime, repository, batching, data plane: protocol-neutral, no Flask,
  gRPC, granian or protobuf
- ``observability/``  metrics, the per-request observer, logs
- ``settings``        every flag once: the typed ``Settings`` (TF Serving's names, env defaults)

Errors are the foundation's one family (``contract.errors``); the wire contract, codecs and
protocol-neutral types come from ``contract``. This package never imports TensorFlow (the
serving image does not ship it).
"""
