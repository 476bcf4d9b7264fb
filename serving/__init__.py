"""digits model server: TensorFlow Serving's REST and gRPC APIs over ONNX Runtime.

Layout (MLServer-style): ``settings`` (typed flags+env), ``errors`` (one error family keyed by
gRPC code), ``runtime`` (ONNX Runtime session + input validation), ``repository`` (version
directories, polling, availability-preserving swap), ``batching`` (optional bounded batcher),
``dataplane`` (all business logic), ``rest`` / ``grpc_server`` (thin adapters), ``metrics``
(Prometheus, multi-process aware), ``workers`` / ``supervisor`` (processes, signals).

This package never imports TensorFlow (the serving image does not ship it).
"""
