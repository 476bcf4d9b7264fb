"""The C load-generator harness: ``python -m loadtest perf``, the serving targets measured.

It owns the wrk and h2load command lines, inputs and output parsing (``generators``), the
benchmark that runs them in interleaved rounds against our server and a baseline (``bench``),
and the rounds' medians, ratios and targets table (``report``). No Locust, no gevent.
"""
