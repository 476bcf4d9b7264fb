"""The C load-generator harness: ``python -m loadtest perf``, the server's cost against its floors.

It owns the wrk and h2load command lines, inputs and output parsing (``generators``), the
benchmark that runs them in interleaved rounds against our server, a baseline and the transport
floors (``bench``), the floors themselves (``floors``: the served model, our answers captured;
``floor_server``: empty handlers on granian and grpcio; ``ort_floor``: ONNX Runtime alone), the
rounds' medians and ratios (``report``), and the multiples of the floors and the targets set in
them (``multiples``). No Locust, no gevent.
"""
