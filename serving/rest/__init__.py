"""The REST adapter: both protocols' HTTP routes over the data plane, on granian.

``app`` composes the blueprints (``tfserving_routes``, ``v2_routes``, ``probe_routes``,
``webpage`` with ``web/``) and the one error handler (``flask_hooks``); ``routes`` is the one
route table and ``errors`` the one error translation, both shared with ``fast_path`` (the
predict/infer hot path in front of Flask); ``gateway`` is the RSGI front door that reads bodies
under a deadline and hands the predict/infer ones straight to the fast path. ``openapi.yaml``
describes the API.
"""
