"""The core: model versions on disk, ONNX Runtime sessions, batching and the data plane.

Protocol-neutral: no web framework, RPC library or protobuf here (an import-linter contract
checks it). ``runtime`` runs one version; ``repository`` finds, loads and swaps one model's
versions; ``batching`` is the optional bounded batcher; ``models`` maps the served models by name;
``control`` keeps every worker on the server's desired models and takes runtime changes;
``dataplane`` holds all business logic (predict, metadata, status, the repository index) that
every adapter calls, routed by model name.
"""
