"""The Locust harness: ``python -m loadtest`` and the locustfile that ``locust -f`` loads.

It owns the Locust users of every wire path (``users``), the locustfile with its options and
event hooks (``locustfile``), the live accuracy and fine latency statistics Locust does not keep
(``stats``), the benchmark that runs Locust at several concurrency levels (``bench``) and its
report files (``report``).
"""
