"""What the server tells its operators: ``metrics`` (Prometheus, multi-process), ``observer``
(one metric sample and one access-log line per request, for every adapter), ``logs`` (JSON lines).
"""
