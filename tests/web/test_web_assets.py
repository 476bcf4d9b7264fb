"""The page's files as served (serving.rest.webpage): types, caching, CSP, and nothing inline or foreign.

In process, on a Flask app holding only the page's blueprint; the real server (granian workers,
the REST app around it) is tests/integration/test_web_page.py's.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from flask import Flask

from contract import IMAGE_SIZE, MODEL_NAME, REST_MODELS_PREFIX, v2
from serving.rest import webpage


@pytest.fixture
def client():
    app = Flask(__name__)
    app.register_blueprint(webpage.blueprint(MODEL_NAME))
    return app.test_client()


class PageParser(HTMLParser):
    """Every tag with its attributes, and any text inside <script> or <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._open = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._open = None

    def handle_data(self, data: str) -> None:
        if self._open and data.strip():
            self.inline.append(data)


def parse(body: bytes) -> PageParser:
    parser = PageParser()
    parser.feed(body.decode())
    return parser


def asset_urls(page: PageParser) -> list[str]:
    return [attrs.get("src") or attrs.get("href") for tag, attrs in page.tags
            if (tag == "script" and "src" in attrs) or (tag == "link" and "href" in attrs)]


def test_the_page_is_html_revalidated_every_time(client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-cache"
    etag = response.headers["ETag"]
    again = client.get("/", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    assert client.head("/").status_code == 200


def test_every_response_carries_a_strict_content_security_policy(client) -> None:
    urls = ["/", *asset_urls(parse(client.get("/").data)), "/web/nope/app.js"]
    for url in urls:
        headers = client.get(url).headers
        policy = dict(
            (part.split(" ", 1) + [""])[:2] for part in headers["Content-Security-Policy"].split("; ")
        )
        assert policy["default-src"] == "'self'", url
        assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'", url
        assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'", url
        assert "unsafe" not in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"


def test_assets_are_versioned_typed_and_cached_for_good(client) -> None:
    urls = asset_urls(parse(client.get("/").data))
    assert {url.rsplit("/", 1)[1] for url in urls} == {"app.js", "style.css", "icon.svg"}
    types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
             ".svg": "image/svg+xml"}
    for url in urls:
        assert re.fullmatch(r"/web/[0-9a-f]{16}/[a-z]+\.(js|css|svg)", url), url
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.headers["Content-Type"] == types[url[url.rindex("."):]]
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert client.get(url, headers={"If-None-Match": response.headers["ETag"]}).status_code == 304
    # The modules app.js imports sit beside it, in the same bundle.
    bundle = urls[0].rsplit("/", 1)[0]
    for module in ("preprocess.js", "server.js"):
        assert client.get(f"{bundle}/{module}").headers["Content-Type"] == types[".js"]


def test_only_this_bundles_files_are_served(client) -> None:
    bundle = asset_urls(parse(client.get("/").data))[0].rsplit("/", 1)[0]
    assert client.get("/web/0123456789abcdef/app.js").status_code == 404  # another release's
    assert client.get(f"{bundle}/index.html").status_code == 404  # the page lives at / only
    assert client.get(f"{bundle}/..%2Fwebpage.py").status_code == 404
    assert client.get(f"{bundle}/missing.js").status_code == 404


def test_a_changed_asset_is_a_new_url() -> None:
    files = webpage.read_files()
    changed = dict(files, **{"app.js": files["app.js"] + b"\n"})
    assert webpage.bundle_version(changed) != webpage.bundle_version(files)


def test_nothing_inline_and_nothing_from_another_origin(client) -> None:
    page = parse(client.get("/").data)
    assert not page.inline, "inline script or style (the CSP would block it)"
    for tag, attrs in page.tags:
        assert "style" not in attrs, f"<{tag} style=...>: inline style"
        assert not [name for name in attrs if name.startswith("on")], f"<{tag}>: inline handler"
        if tag == "script":
            assert attrs.get("type") == "module" and attrs["src"].startswith("/web/")
    for url in asset_urls(page):
        assert url.startswith("/") and not url.startswith("//"), url
    for name, body in webpage.read_files().items():
        text = body.decode()
        assert not re.search(r"https?://|//cdn|@import", text.replace("http://www.w3.org/2000/svg", "")), name
        assert "eval(" not in text and "new Function" not in text, name


def test_the_page_is_told_the_contract_by_the_server(client) -> None:
    page = parse(client.get("/").data)
    meta = next(attrs for tag, attrs in page.tags if tag == "meta" and attrs.get("name") == "digits-config")
    config = json.loads(meta["content"])
    assert config["model"] == MODEL_NAME
    assert config["modelsPrefix"] == REST_MODELS_PREFIX
    assert config["imageSize"] == IMAGE_SIZE
    # the picker's list: the V2 repository index's ready rows
    assert (config["repositoryIndex"], config["readyState"]) == (v2.REPOSITORY_INDEX_PATH, v2.INDEX_READY)


def test_a_model_name_cannot_break_out_of_the_page() -> None:
    app = Flask(__name__)
    app.register_blueprint(webpage.blueprint('x"><script>alert(1)</script>'))
    page = parse(app.test_client().get("/").data)
    assert [tag for tag, _ in page.tags].count("script") == 1
    meta = next(attrs for tag, attrs in page.tags if tag == "meta" and attrs.get("name") == "digits-config")
    assert json.loads(meta["content"])["model"] == 'x"><script>alert(1)</script>'


def test_accessible_basics_in_the_markup(client) -> None:
    page = parse(client.get("/").data)
    tags = dict.fromkeys(tag for tag, _ in page.tags)
    assert "html" in tags and dict(page.tags)["html"].get("lang") == "en"
    viewport = next(attrs for tag, attrs in page.tags if tag == "meta" and attrs.get("name") == "viewport")
    assert "width=device-width" in viewport["content"]
    for tag, attrs in page.tags:
        if tag == "canvas":
            assert attrs.get("role") == "img" and attrs.get("aria-label"), attrs
        if tag == "button":
            assert attrs.get("type") == "button"
    labels = {attrs.get("for") for tag, attrs in page.tags if tag == "label"}
    assert "file" in labels  # the file input has a label
    assert "models" in labels and ("select", {"id": "models", "disabled": None}) in page.tags  # the picker
    assert any(tag == "table" for tag, _ in page.tags)  # the chart's text alternative
    assert any(attrs.get("role") == "alert" for _, attrs in page.tags)
