"""The gRPC adapter: ``server`` (one port, health), ``tfserving_servicer`` and ``v2_servicer``
(one per protocol), ``calls`` (method binding, the one error translation and observation).
"""
