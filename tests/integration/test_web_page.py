"""The web page in a real browser (Debian's chromium driven by Playwright) against real servers.

- The page's preprocessing (serving/rest/web/preprocess.js, run in the browser on real files) gives
  the client library's 28x28 input (client.images) within 1/255 per pixel.
- Ten MNIST test digits, one per class, drawn stroke by stroke with pointer events (mouse, pen)
  from their pixels: at least 9 answered right, the probabilities shown sum to 1, and what the
  page says the model saw is client.images' preprocessing of the canvas as a PNG.
- On a phone-sized viewport: a photo from client/samples/ uploaded, a digit drawn with a finger.
- The model picker: always offers the model the page was served for, chosen; lists the ready
  models of the server's V2 repository index (needs a server with the index).
- The server stopped: a readable message; started again on the same port: the page recovers.
  No model version yet: a message, then the answer once one is loaded; a refused request: a
  message with the server's reason.

Screenshots go to $DIGITS_WEB_ARTIFACTS (default: a pytest temporary directory);
DIGITS_UPDATE_SCREENSHOT=1 also writes the README's docs/figures/web-page.png. Without chromium
(`make test` installs it with apt-get when it can) or Playwright, every test here is skipped with
the reason.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from client import images
from contract import IMAGE_SIZE, LIVENESS_PATH, MODEL_NAME, v2
from contract.mnist import load_split
from tests.integration.conftest import RunningServer, copy_repository, free_port, start_server

ROOT = Path(__file__).resolve().parents[2]
PRETRAINED = ROOT / "pretrained" / MODEL_NAME
SAMPLES = sorted((ROOT / "client" / "samples").iterdir())
README_FIGURE = ROOT / "docs" / "figures" / "web-page.png"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]  # Playwright adds --headless and a new empty --user-data-dir
DESKTOP = {"viewport": {"width": 1200, "height": 820}}
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
TIMEOUT_MS = 30_000  # any one wait in the page (two cores shared with other tests)
INK = 128  # an MNIST pixel above this is drawn
TOLERANCE = 1 / 255

pytestmark = pytest.mark.slow


# --- the browser -------------------------------------------------------------------------------
def chromium_path() -> str | None:
    return os.environ.get("DIGITS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed (requirements/dev.txt pins it)"
    )
    executable = chromium_path()
    if executable is None:
        pytest.skip(
            "no chromium on this machine: the browser tests need Debian's chromium "
            "(`make test` installs it with apt-get when run as root)"
        )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS, timeout=60_000)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("DIGITS_WEB_ARTIFACTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("web-page")
    path.mkdir(parents=True, exist_ok=True)
    return path


class PageProblems:
    """Uncaught script errors and CSP violations seen by a page (both must stay empty)."""

    def __init__(self, page) -> None:
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on(
            "console",
            lambda message: self.errors.append(message.text)
            if "Content Security Policy" in message.text
            else None,
        )


def open_page(browser, url: str, **context_options):
    context = browser.new_context(**context_options)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.problems = PageProblems(page)
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready=true]")
    return page


# --- the servers ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The shipped model served with the production settings (worker processes)."""
    workdir = tmp_path_factory.mktemp("web_server")
    server = start_server(copy_repository(PRETRAINED, workdir / MODEL_NAME), workdir / "server.log")
    yield server
    server.stop()


def start_on(rest_port: int, grpc_port: int, repository: Path, log: Path, *flags: str,
             ready: bool = True) -> RunningServer:
    """A server on the given ports (the later flags win); ready: a model version is AVAILABLE."""
    server = start_server(repository, log, "--port", str(grpc_port), "--rest_api_port", str(rest_port),
                          *flags, wait=False)
    server.rest_url, server.grpc_target = f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}"
    try:
        if ready:
            server.wait_ready()
        else:
            wait_live(server)
    except BaseException:
        server.stop(timeout=10)
        raise
    return server


def wait_live(server: RunningServer, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited:\n{server.log()[-3000:]}")
        try:
            with urllib.request.urlopen(server.rest_url + LIVENESS_PATH, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"server not live within {timeout:.0f}s:\n{server.log()[-3000:]}")


# --- drawing and reading the page ----------------------------------------------------------------
def strokes(digit: np.ndarray) -> list[tuple[int, int, int]]:
    """(row, first column, last column) of each run of ink pixels along the rows."""
    runs = []
    for row, pixels in enumerate(digit > INK):
        column = 0
        while column < len(pixels):
            if pixels[column]:
                end = column
                while end + 1 < len(pixels) and pixels[end + 1]:
                    end += 1
                runs.append((row, column, end))
                column = end
            column += 1
    return runs


def draw(page, digit: np.ndarray, pointer: str = "mouse") -> None:
    """Draw ``digit`` on the pad, one stroke per run: mouse (Playwright), pen or touch (CDP)."""
    box = page.locator("#pad").bounding_box()
    cell = box["width"] / IMAGE_SIZE  # the canvas scale: 28x28 onto the pad's size
    cdp = page.context.new_cdp_session(page) if pointer != "mouse" else None
    for row, first, last in strokes(digit):
        y = box["y"] + (row + 0.5) * cell
        start, end = (box["x"] + (column + 0.5) * cell for column in (first, last))
        if pointer == "mouse":
            page.mouse.move(start, y)
            page.mouse.down()
            page.mouse.move(end, y)
            page.mouse.up()
        elif pointer == "pen":
            pen = {"button": "left", "pointerType": "pen", "y": y, "clickCount": 1}
            cdp.send("Input.dispatchMouseEvent", {**pen, "type": "mousePressed", "x": start, "buttons": 1})
            cdp.send("Input.dispatchMouseEvent", {**pen, "type": "mouseMoved", "x": end, "buttons": 1})
            cdp.send("Input.dispatchMouseEvent", {**pen, "type": "mouseReleased", "x": end, "buttons": 0})
        else:
            touch = "Input.dispatchTouchEvent"
            cdp.send(touch, {"type": "touchStart", "touchPoints": [{"x": start, "y": y}]})
            cdp.send(touch, {"type": "touchMove", "touchPoints": [{"x": end, "y": y}]})
            cdp.send(touch, {"type": "touchEnd", "touchPoints": []})
    if cdp is not None:
        cdp.detach()


SETTLED = """() => {
    const answer = document.getElementById('answer');
    return answer.dataset.revision === document.body.dataset.revision && answer.dataset.state !== 'busy';
}"""

READ = """() => {
    const text = (id) => document.getElementById(id).textContent;
    const problem = document.getElementById('problem');
    return {
        state: document.getElementById('answer').dataset.state,
        digit: text('digit'),
        confidence: text('confidence'),
        probabilities: [...document.querySelectorAll('#probabilities tbody td')].map((td) => td.textContent),
        model: text('model'),
        version: text('version'),
        latency: text('latency'),
        problem: problem.hidden ? null : problem.textContent,
        problemKind: problem.dataset.kind || null,
    };
}"""


def settled_answer(page) -> dict:
    page.wait_for_function(SETTLED)
    return page.evaluate(READ)


def seen_pixels(page) -> np.ndarray:
    """What the page shows as the model's input (grey bytes of the 28x28 canvas) in [0, 1]."""
    data = page.evaluate(
        "() => Array.from(document.getElementById('seen').getContext('2d')"
        ".getImageData(0, 0, 28, 28).data.filter((_, i) => i % 4 === 0))"
    )
    return np.asarray(data, dtype=np.float32).reshape(IMAGE_SIZE, IMAGE_SIZE) / 255


def pad_as_png(page) -> Image.Image:
    url = page.evaluate("() => document.getElementById('pad').toDataURL('image/png')")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def clear(page) -> None:
    page.get_by_role("button", name="Clear").click()


def screenshot(page, artifacts: Path, name: str) -> Path:
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(scope="module")
def one_per_class(mnist_dir: Path) -> list[tuple[int, np.ndarray]]:
    """The first MNIST test image of each class, as (label, uint8 28x28)."""
    digits, labels = load_split("t10k", str(mnist_dir))
    return [(label, digits[int(np.flatnonzero(labels == label)[0])]) for label in range(10)]


# --- the tests -----------------------------------------------------------------------------------
def synthetic_pictures(folder: Path, digit: np.ndarray) -> list[Path]:
    """Pictures the samples do not cover: a transparent drawing, ink bright on a dark board, an
    odd aspect ratio as JPEG, a JPEG turned by its EXIF orientation, a phone-sized photo (past
    MAX_SIDE: reduced first; Pillow decodes it at half scale, the browser at full, and still)."""
    big = Image.fromarray(digit).resize((150, 210), Image.Resampling.BICUBIC)
    ink = np.asarray(big)
    drawing = np.zeros((*ink.shape, 4), np.uint8)
    drawing[..., :3] = (200, 30, 30)
    drawing[..., 3] = ink
    board = (40 + ink * 0.7).astype(np.uint8)
    paper = Image.fromarray((235 - ink * 0.8).astype(np.uint8)).resize((260, 120))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    pictures = {
        "transparent-drawing.png": (Image.fromarray(drawing, "RGBA"), {}),
        "dark-board.png": (Image.fromarray(board), {}),
        "wide-paper.jpg": (paper.convert("RGB"), {"quality": 90}),
        "exif-rotated.jpg": (Image.fromarray(255 - ink).convert("RGB"), {"quality": 90, "exif": exif}),
        "phone-photo.jpg": (paper.resize((4000, 3000), Image.Resampling.BICUBIC).convert("RGB"), {}),
    }
    paths = []
    for name, (picture, options) in pictures.items():
        picture.save(folder / name, **options)
        paths.append(folder / name)
    return paths


def test_the_pages_preprocessing_is_the_client_librarys(
    browser, web_server: RunningServer, one_per_class, tmp_path: Path
) -> None:
    pictures = SAMPLES + synthetic_pictures(tmp_path, one_per_class[4][1])
    page = open_page(browser, web_server.rest_url, **DESKTOP)
    page.evaluate(
        "() => { const input = Object.assign(document.createElement('input'),"
        " {type: 'file', multiple: true, id: 'test-files', hidden: true}); document.body.append(input); }"
    )
    page.set_input_files("#test-files", [str(path) for path in pictures])
    results = page.evaluate(
        """async (size) => {
            const app = document.querySelector('script[type=module]').src;
            const { preprocessPicture } = await import(app.replace(/app\\.js$/, 'preprocess.js'));
            const out = [];
            for (const file of document.getElementById('test-files').files) {
                try { out.push(Array.from(await preprocessPicture(file, size))); }
                catch (error) { out.push(String(error)); }
            }
            return out;
        }""",
        IMAGE_SIZE,
    )
    differences = {}
    for path, result in zip(pictures, results, strict=True):
        assert not isinstance(result, str), f"{path.name}: the page refused it: {result}"
        expected = images.load_inputs(str(path))[0].pixels[..., 0]
        got = np.asarray(result, np.float32).reshape(expected.shape)
        differences[path.name] = float(np.abs(got - expected).max())
    in_levels = {name: round(difference * 255, 4) for name, difference in differences.items()}
    assert max(differences.values()) <= TOLERANCE, f"largest difference per picture, in 1/255: {in_levels}"
    assert not page.problems.errors
    page.context.close()


def test_drawn_digits_are_answered_on_the_desktop(
    browser, web_server: RunningServer, one_per_class, artifacts: Path
) -> None:
    page = open_page(browser, web_server.rest_url, **DESKTOP)
    page.wait_for_function("() => document.getElementById('version').textContent === '1'")
    right = []
    for label, digit in one_per_class:
        clear(page)
        draw(page, digit, pointer="pen" if label % 2 else "mouse")
        answer = settled_answer(page)
        assert answer["state"] == "answered", answer
        assert answer["problem"] is None, answer
        probabilities = [float(p) for p in answer["probabilities"]]
        assert abs(sum(probabilities) - 1) <= 0.001, probabilities  # four decimals each
        assert int(answer["digit"]) == int(np.argmax(probabilities))
        assert (answer["model"], answer["version"]) == (MODEL_NAME, "1")
        assert re.fullmatch(r"\d+\.\d ms", answer["latency"]), answer["latency"]
        # What the page says the model saw is what the client library makes of the drawing.
        expected = images.preprocess(pad_as_png(page))[..., 0]
        assert np.abs(seen_pixels(page) - expected).max() <= TOLERANCE, f"digit {label}"
        right.append(int(answer["digit"]) == label)
    assert sum(right) >= 9, f"right per class 0-9: {right}"
    assert not page.problems.errors
    screenshot(page, artifacts, "desktop")
    if os.environ.get("DIGITS_UPDATE_SCREENSHOT") == "1":
        bottom = page.evaluate("() => document.querySelector('footer').getBoundingClientRect().bottom")
        width = DESKTOP["viewport"]["width"]
        page.screenshot(path=str(README_FIGURE), clip={"x": 0, "y": 0, "width": width, "height": bottom + 8})
    page.context.close()


def test_photo_upload_and_a_finger_on_a_phone(
    browser, web_server: RunningServer, one_per_class, artifacts: Path
) -> None:
    page = open_page(browser, web_server.rest_url, **PHONE)
    sample = ROOT / "client" / "samples" / "digit-3-chalk-t10k-18.png"
    page.set_input_files("#file", str(sample))
    answer = settled_answer(page)
    assert answer["state"] == "answered" and answer["digit"] == "3", answer
    assert page.locator("#photo").is_visible() and not page.locator("#pad").is_visible()
    expected = images.load_inputs(str(sample))[0].pixels[..., 0]
    assert np.abs(seen_pixels(page) - expected).max() <= TOLERANCE
    # Nothing wider than the phone: no sideways scrolling.
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["viewport"]["width"]
    screenshot(page, artifacts, "phone-photo")

    # The controls work from the keyboard: Tab reaches Clear, then the file input; Enter clears.
    page.evaluate("() => document.activeElement.blur()")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "clear"
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "file"
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")
    assert page.locator("#pad").is_visible() and page.locator("#digit").inner_text() == "?"
    label, digit = one_per_class[2]
    draw(page, digit, pointer="touch")
    answer = settled_answer(page)
    assert answer["state"] == "answered" and answer["digit"] == str(label), answer
    screenshot(page, artifacts, "phone-drawing")
    assert not page.problems.errors
    page.context.close()


PICKER = """() => {
    const picker = document.getElementById('models');
    return {source: picker.dataset.source || null, chosen: picker.value, disabled: picker.disabled,
            names: [...picker.options].map((option) => option.value)};
}"""


def ready_models(rest_url: str) -> list[str]:
    """The distinct model names of the server's V2 repository index, ready ones only, in order."""
    request = urllib.request.Request(rest_url + v2.REPOSITORY_INDEX_PATH, data=b'{"ready": true}',
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        rows = json.load(response)
    return list(dict.fromkeys(row["name"] for row in rows if row["state"] == v2.INDEX_READY))


def test_the_picker_offers_the_pages_own_model_chosen(browser, web_server: RunningServer) -> None:
    """Whatever the server (with the repository index or without): the page's model is offered,
    chosen, and answers."""
    page = open_page(browser, web_server.rest_url, **DESKTOP)
    page.wait_for_function("() => document.getElementById('models').dataset.source")
    picker = page.evaluate(PICKER)
    assert picker["chosen"] == MODEL_NAME and MODEL_NAME in picker["names"], picker
    assert picker["disabled"] == (len(picker["names"]) < 2)
    assert not page.problems.errors
    page.context.close()


def test_the_picker_lists_the_ready_models_of_the_repository_index(
    browser, web_server: RunningServer
) -> None:
    """Needs the V2 repository index (POST /v2/repository/index): the picker offers exactly the
    distinct names of its ready rows, the page's model chosen."""
    expected = ready_models(web_server.rest_url)
    page = open_page(browser, web_server.rest_url, **DESKTOP)
    page.wait_for_function("() => document.getElementById('models').dataset.source")
    picker = page.evaluate(PICKER)
    assert picker["source"] == "index", "the page fell back to its own model: the index call failed"
    assert picker["names"] == expected and picker["chosen"] == MODEL_NAME, (picker, expected)
    assert not page.problems.errors
    page.context.close()


def test_server_stopped_then_back_on_the_same_port(
    browser, one_per_class, artifacts: Path, tmp_path: Path
) -> None:
    repository = copy_repository(PRETRAINED, tmp_path / MODEL_NAME)
    rest_port, grpc_port = free_port(), free_port()
    server = start_on(rest_port, grpc_port, repository, tmp_path / "first.log")
    try:
        page = open_page(browser, server.rest_url, **DESKTOP)
        draw(page, one_per_class[7][1])
        assert settled_answer(page)["digit"] == "7"

        server.stop()
        clear(page)
        draw(page, one_per_class[3][1])
        answer = settled_answer(page)
        assert answer["state"] == "failed", answer
        assert answer["problemKind"] == "unreachable"
        assert "Cannot reach the model server" in answer["problem"], answer
        screenshot(page, artifacts, "server-down")

        server = start_on(rest_port, grpc_port, repository, tmp_path / "second.log")
        # The page polls the status, sees the model again and asks again on its own.
        page.wait_for_function("() => document.getElementById('problem').hidden")
        answer = settled_answer(page)
        assert answer["state"] == "answered" and answer["digit"] == "3", answer
        assert not page.problems.errors
        page.context.close()
    finally:
        server.stop()


def test_no_model_yet_then_a_refused_request(
    browser, one_per_class, artifacts: Path, tmp_path: Path
) -> None:
    repository = tmp_path / MODEL_NAME
    repository.mkdir()
    # Bodies are capped far below one image's JSON, so the model's first request is refused.
    server = start_on(free_port(), free_port(), repository, tmp_path / "server.log",
                      "--max_request_bytes", "2000", ready=False)
    try:
        page = open_page(browser, server.rest_url, **DESKTOP)
        page.wait_for_function("() => document.getElementById('problem').dataset.kind === 'unavailable'")
        assert "not available yet" in page.locator("#problem").inner_text()
        screenshot(page, artifacts, "no-model-yet")

        staged = copy_repository(PRETRAINED, tmp_path / "staging")
        os.rename(staged / "1", repository / "1")  # appears whole, as an export publishes it
        page.wait_for_function("() => document.getElementById('problem').hidden")
        page.wait_for_function("() => document.getElementById('version').textContent === '1'")

        draw(page, one_per_class[5][1])
        # (A connection reset instead of the 413 would read "cannot reach", then be retried.)
        page.wait_for_function("() => document.getElementById('problem').dataset.kind === 'refused'")
        answer = settled_answer(page)
        assert answer["state"] == "failed", answer
        assert "refused" in answer["problem"] and "413" in answer["problem"], answer
        assert not page.problems.errors
        page.context.close()
    finally:
        server.stop()
