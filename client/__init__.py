"""digits client: REST and gRPC clients over TF Serving's APIs and the Open Inference Protocol
(V2), real-picture preprocessing, the CLI.

Modules, by job:
  ``api``              the public face: :func:`client.api.connect` and the names callers use
  ``base``             the one interface (``DigitsClient``), ``ModelSpec``, ``Prediction``, the timeout
  ``http_transport``   one HTTP call with errors typed, shared by both REST clients
  ``grpc_transport``   the gRPC channel and one call with errors typed, shared by both gRPC clients
  ``rest_client``, ``grpc_client``         TF Serving's REST and gRPC APIs
  ``v2_base``, ``v2_rest_client``, ``v2_grpc_client``   the Open Inference Protocol (V2)
  ``images``           pictures, ``.npy`` arrays and MNIST digits as model inputs
  ``cli``              ``python -m client predict / status / metadata``

Light by design (no TensorFlow, Locust or matplotlib): load testing lives in ``loadtest``.
"""
