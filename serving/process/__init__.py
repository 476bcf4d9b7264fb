"""Processes: ``supervisor`` (starts, restarts and stops the workers; signals) and ``workers``
(one gRPC worker, or granian's master of the REST workers), started as ``python -m
serving.process.workers ROLE``; ``placement`` (``--cpu_affinity``: each worker pinned to one CPU).
"""
