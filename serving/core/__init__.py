"""The core: model versions on disk, ONNX Runtime sessions, batching and the data plane.

Protocol-neutral: no web framework, RPC library or protobuf here (an import-linter contract
checks it). ``runtime`` runs one version; ``repository`` finds, loads and swaps versions;
``batching`` is the optional bounded batcher; ``dataplane`` holds all business logic (predict,
metadata, status) that every adapter calls.
"""
