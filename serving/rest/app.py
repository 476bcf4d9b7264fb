"""The REST app: TF Serving's REST API and the Open Inference Protocol's over one data plane.

``create_app`` composes one blueprint per area (``tfserving_routes``, ``v2_routes``,
``probe_routes``, ``webpage``) and one error handler (``flask_hooks``, translating through
``serving.rest.errors``), then puts the fast path (``serving.rest.fast_path``) in front of it
as WSGI middleware: the common predict and infer requests never reach Flask, and are answered
byte for byte as Flask would. The app runs under granian behind ``serving.rest.gateway`` in
production (``serving.process.workers``), never Flask's development server.
"""

from __future__ import annotations

from flask import Flask

from serving.core.dataplane import DataPlane
from serving.rest import flask_hooks, probe_routes, tfserving_routes, v2_routes, webpage
from serving.rest.fast_path import FastPredict
from serving.settings import Settings


def create_app(
    dataplane: DataPlane,
    *,
    max_request_bytes: int = Settings.max_request_bytes,
    timeout_seconds: float | None = Settings.rest_api_timeout_in_ms / 1000,
    access_log: bool = Settings.access_log,
    fast_predict: bool = True,
) -> Flask:
    """The Flask app for one data plane (tests build their own with a tiny model).

    ``fast_predict`` (the default) installs the fast path; ``False`` serves everything through
    Flask.
    """
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_request_bytes
    app.register_blueprint(tfserving_routes.blueprint(dataplane, timeout_seconds, access_log))
    app.register_blueprint(v2_routes.blueprint(dataplane, (max_request_bytes, timeout_seconds), access_log))
    app.register_blueprint(probe_routes.blueprint(dataplane))
    app.register_blueprint(webpage.blueprint(dataplane.default_model))
    flask_hooks.install_error_handler(app, max_request_bytes)
    if fast_predict:
        app.wsgi_app = FastPredict(  # type: ignore[method-assign]
            app.wsgi_app, dataplane, max_request_bytes=max_request_bytes,
            timeout_seconds=timeout_seconds, access_log=access_log,
        )
    return app
