"""The wire formats: each protocol's codecs between its messages and plain values.

``tfserving`` (TF Serving's REST JSON and gRPC messages) and ``v2`` (the Open Inference
Protocol's). Codecs never import the adapters (``serving.rest``, ``serving.grpc``) nor the
data plane: they turn bytes and messages into arrays and back.
"""
