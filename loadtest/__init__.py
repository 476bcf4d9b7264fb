"""digits load testing (builds on the client): two benchmark harnesses side by side.

  loadtest/
    __main__.py       ``python -m loadtest`` / ``digits-loadtest``: both harnesses' command line
    paths.py          the wire paths (rest, grpc, v2-rest, v2-json, v2-grpc), named once for both
    server.py         the server under test: ours started over a model repository, its CPU time
    locust_bench/     Locust: the users, the locustfile, live statistics, the benchmark and its report
    perf/             C load generators (``python -m loadtest perf``): wrk and h2load, rounds, report

The two harnesses share only ``paths`` and ``server``; neither imports the other.
"""
