"""The web page: draw a digit or drop a photo, see the model's answer (a Flask blueprint).

Routes (registered on the REST app by ``serving.rest.create_app``):
  GET /                          the page (``serving/rest/web/index.html``)
  GET /web/{bundle}/{file}       its script modules, style sheet and icon

The page is plain files in ``serving/rest/web/`` (package data; no build step, nothing from another
origin). They are read once, through ``importlib.resources``, when the app is built: the server
writes nothing, so a read-only root filesystem is fine. The page preprocesses pictures in the
browser exactly as ``client/images.py`` does and calls the public REST API any client calls
(the V2 repository index for the models to pick from, model status for the version,
``:predict`` for the answer): this module serves files and nothing else. The model the page is
served for is its default choice, and the only one when the server has no repository index.

Caching: ``{bundle}`` is a hash of all the asset files, so an asset URL never changes meaning;
assets are cached for a year as immutable, and a new release is a new URL. The page itself is
``no-cache`` (always revalidated, with an ETag). Every response carries a Content-Security-Policy
allowing only this origin (no inline script or style, no other origin), plus nosniff, no
referrer and no framing.
"""

from __future__ import annotations

import hashlib
import html
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePosixPath

from flask import Blueprint, Response, abort, request

from contract import (
    IMAGE_SIZE,
    INPUT_NAME,
    MODEL_NAME,
    NUM_CLASSES,
    OUTPUT_DIGIT,
    OUTPUT_PROBABILITIES,
    REST_MODELS_PREFIX,
    SIGNATURE_NAME,
    v2,
)

ASSETS_PATH = "/web"
PAGE = "index.html"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
PAGE_CACHE = "no-cache"  # revalidate every time (cheap: ETag)
ASSET_CACHE = "public, max-age=31536000, immutable"  # the URL changes when the file does
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class StaticFile:
    """One file as served: its bytes, content type and entity tag."""

    body: bytes
    content_type: str

    @property
    def etag(self) -> str:
        return hashlib.sha256(self.body).hexdigest()[:20]


def read_files() -> dict[str, bytes]:
    """The page's files by name, from the installed package (never written)."""
    folder = resources.files("serving.rest").joinpath("web")
    return {
        entry.name: entry.read_bytes()
        for entry in folder.iterdir()
        if entry.is_file() and PurePosixPath(entry.name).suffix in CONTENT_TYPES
    }


def bundle_version(assets: dict[str, bytes]) -> str:
    """A short hash of every asset's name and bytes: the path segment that versions them."""
    digest = hashlib.sha256()
    for name in sorted(assets):
        digest.update(name.encode() + b"\0" + hashlib.sha256(assets[name]).digest())
    return digest.hexdigest()[:16]


def page_config(model_name: str) -> dict:
    """What the page's script needs from the contract (stated once, in ``contract``); ``model``:
    the model picked when the page opens."""
    return {
        "model": model_name,
        "modelsPrefix": REST_MODELS_PREFIX,
        "repositoryIndex": v2.REPOSITORY_INDEX_PATH,
        "readyState": v2.INDEX_READY,
        "signature": SIGNATURE_NAME,
        "input": INPUT_NAME,
        "outputs": {"probabilities": OUTPUT_PROBABILITIES, "digit": OUTPUT_DIGIT},
        "imageSize": IMAGE_SIZE,
        "classes": NUM_CLASSES,
    }


def _typed(name: str, body: bytes) -> StaticFile:
    return StaticFile(body, CONTENT_TYPES[PurePosixPath(name).suffix])


def blueprint(model_name: str = MODEL_NAME) -> Blueprint:
    """The page's routes, ``model_name`` picked when it opens (its files read now, once)."""
    files = read_files()
    template = files.pop(PAGE).decode()
    assets = {name: _typed(name, body) for name, body in files.items()}
    assets_url = f"{ASSETS_PATH}/{bundle_version(files)}"
    config = html.escape(json.dumps(page_config(model_name), separators=(",", ":")), quote=True)
    page = _typed(PAGE, template.replace("%ASSETS%", assets_url).replace("%CONFIG%", config).encode())

    web = Blueprint("webpage", __name__)

    @web.get("/")
    def index() -> Response:
        return _send(page, PAGE_CACHE)

    @web.get(f"{ASSETS_PATH}/<bundle>/<name>")
    def asset(bundle: str, name: str) -> Response:
        if f"{ASSETS_PATH}/{bundle}" != assets_url or name not in assets:
            abort(404)
        return _send(assets[name], ASSET_CACHE)

    @web.after_request
    def secure(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    return web


def _send(file: StaticFile, cache_control: str) -> Response:
    response = Response(file.body, 200, content_type=file.content_type)
    response.headers["Cache-Control"] = cache_control
    response.set_etag(file.etag)
    return response.make_conditional(request)
