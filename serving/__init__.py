"""digits model server: TensorFlow Serving's REST and gRPC APIs and the Open Inference Protocol
(KServe V2 / Triton) over ONNX Runtime.

Layout (MLServer-style; one job per module, dependencies pointing down the list):

- ``settings``       every flag once: the typed ``Settings`` (TF Serving's names, env defaults)
- ``runtime``        one ONNX Runtime session per version; images checked before they run
- ``repository``     version directories, polling, the availability-preserving swap, status rows
- ``batching``       the optional bounded batcher
- ``dataplane``      all business logic (predict, metadata, status) in protocol-neutral types
- ``tfserving_proto``  TF Serving's gRPC messages <-> plain values and ``contract.types``
- ``tfserving_json``   TF Serving's REST JSON <-> plain values and ``contract.types``
- ``v2_json``        the Open Inference Protocol's REST JSON (binary tensor extension) <-> plain
  values
- ``v2_proto``       the Open Inference Protocol's gRPC messages <-> plain values
- ``json_tensor``    the fast path for the pixel arrays of REST predict bodies
- ``rest`` / ``grpc_server``  thin adapters: decode, call the data plane, encode; one error
  translation point each (Flask error handlers; one gRPC wrapper)
- ``rest_fast``      the plain-WSGI fast path for common predict and V2 infer requests, in front
  of Flask
- ``rsgi_gateway``   the REST workers' front: whole bodies awaited off-thread under a deadline
  (408), then the WSGI app
- ``webpage``        the page at ``/`` and its assets (``serving/web/``)
- ``observe``        one metric sample and one access-log line per request, for both adapters
- ``metrics``        Prometheus metrics, multi-process aware
- ``logs``           JSON-lines logging and the access logger
- ``workers`` / ``supervisor`` / ``__main__``  processes, signals, the entry point

Errors are the foundation's one family (``contract.errors``); the wire contract, codecs and
protocol-neutral types come from ``contract``. This package never imports TensorFlow (the
serving image does not ship it).
"""
