"""digits client: REST and gRPC clients over TF Serving's APIs, real-picture preprocessing, the CLI.

Light by design (no TensorFlow, Locust or matplotlib): load testing lives in ``loadtest``.
"""
