"""TensorBoard on 127.0.0.1 and headless Chromium driven over the DevTools protocol: the dashboards as a user sees
them, read back as plain data.

``examples/screenshots.py`` takes the README's screenshots with these helpers; ``tests/test_browser.py`` checks with
them that every image tag, custom-scalars chart and text tag a run logged renders; ``tests/test_live_tensorboard.py``
talks to a running server with :func:`free_port` and :func:`get_json`.

Example::

    run = read_run(run_dir)  # the image tags, text tags and custom-scalars charts of a run's event files
    with tensorboard(logdir, run) as base, Browser() as browser:
        cards = show_images(Page(browser), base, "gradcam", len(run.images))
        assert not image_problems([tag for tag in run.images if "gradcam" in tag][:PAGE_SIZE], cards)

Chromium runs at TensorBoard's default size (1600x1200 CSS pixels) and device scale 1. Needs the ``chromium``
command (Debian: ``apt-get install chromium``); nothing beyond 127.0.0.1 is reached. This module imports
``tensorboard``; ``import lightning_viz`` does not import it.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import math
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata
from tensorboard.plugins.text import metadata as text_metadata

__all__ = [
    "HEIGHT",
    "PAGE_SIZE",
    "WIDTH",
    "Browser",
    "Chart",
    "Page",
    "Run",
    "chart_problems",
    "exact_filters",
    "free_port",
    "get_json",
    "image_problems",
    "read_run",
    "show_custom_scalars",
    "show_images",
    "show_texts",
    "tensorboard",
    "text_problems",
    "texts_shown",
]

WIDTH, HEIGHT = 1600, 1200  # TensorBoard's default size, in CSS pixels
PAGE_SIZE = 12  # cards on one page of a tag group, TensorBoard's default ("TF.TensorBoard.PaginatedView.limit")

# --- what a run logged, read from its event files ---------------------------------------------------------------


@dataclass(frozen=True)
class Chart:
    category: str
    title: str
    lines: int  # the scalar series its regexes match that have two points or more: TensorBoard draws one as no line


@dataclass(frozen=True)
class Run:
    images: list[str]
    texts: list[str]
    charts: list[Chart]


def read_run(run_dir: Path) -> Run:
    """The image tags, text tags and custom-scalars charts of one run directory's event files."""
    events = EventAccumulator(str(run_dir), size_guidance={"images": 1, "tensors": 1, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    plugins = {tag: events.SummaryMetadata(tag).plugin_data.plugin_name for tag in tags["tensors"]}
    texts = sorted(tag for tag, plugin in plugins.items() if plugin == text_metadata.PLUGIN_NAME)
    drawn = [tag for tag in tags["scalars"] if len(events.Scalars(tag)) >= 2]
    charts = []
    if custom_scalar_metadata.CONFIG_SUMMARY_TAG in plugins:
        config = events.Tensors(custom_scalar_metadata.CONFIG_SUMMARY_TAG)[-1].tensor_proto.string_val[0]
        for category in layout_pb2.Layout.FromString(config).category:
            for chart in category.chart:  # the server matches a chart's regexes with re.match
                matched = {tag for tag in drawn for regex in chart.multiline.tag if re.match(regex, tag)}
                charts.append(Chart(category.title, chart.title, len(matched)))
    return Run(sorted(tags["images"]), texts, charts)


# --- TensorBoard ------------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> Any:
    """The JSON a server answers at `url` (an OSError while it is not up)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def tensorboard(logdir: Path, run: Run, seconds: float = 60) -> Iterator[str]:
    """TensorBoard on 127.0.0.1 serving logdir, as the example's printed command does; yields its address once it
    lists the run's image and text tags (or after `seconds`: what it then lacks, the dashboards will lack)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
         "--port", str(port), "--samples_per_plugin", "images=100"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + seconds
        while True:
            try:
                served = [set().union(*get_json(f"{base}/data/plugin/{p}/tags").values()) for p in ("images", "text")]
                if set(run.images) <= served[0] and set(run.texts) <= served[1]:
                    break
            except OSError:  # not up yet
                pass
            if server.poll() is not None:
                raise RuntimeError(f"tensorboard exited with status {server.returncode} on {logdir}")
            if time.monotonic() > deadline:
                break
            time.sleep(0.25)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


# --- Chromium over the DevTools protocol ------------------------------------------------------------------------


class Browser:
    """Debian's chromium, headless, driven over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON
    messages, each ended by a NUL byte; chromium reads ours on its fd 3 and writes its own on its fd 4)."""

    def __init__(self, executable: str = "chromium") -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True)
        self._replies, their_out = os.pipe()
        their_in, self._commands = os.pipe()
        # above 4, so that placing them at 3 and 4 cannot close one with the other (and bash: dash's redirections
        # take one-digit descriptors only)
        fds = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5) for fd in (their_in, their_out)]
        os.close(their_in)
        os.close(their_out)
        flags = [
            "--headless", "--remote-debugging-pipe", f"--user-data-dir={self._profile.name}",
            "--no-sandbox",  # CI containers run as root, where chromium's sandbox refuses to start
            "--disable-gpu", "--disable-dev-shm-usage", "--disable-extensions", "--no-first-run",
            "--no-default-browser-check", "--mute-audio", "--hide-scrollbars", "--force-device-scale-factor=1",
            f"--window-size={WIDTH},{HEIGHT}", "about:blank",
        ]  # fmt: skip
        self._process = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{fds[0]} 4>&{fds[1]} {fds[0]}<&- {fds[1]}>&-', "bash", executable, *flags],
            pass_fds=fds, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        for fd in fds:
            os.close(fd)
        self._buffer = bytearray()
        self._last_id = 0

    def send(self, method: str, session: str | None = None, seconds: float = 60, **params: Any) -> dict[str, Any]:
        """One command; its result, once chromium answers (events in between are dropped)."""
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._commands, data) :]
        except BrokenPipeError:
            raise RuntimeError(f"chromium exited (status {self._process.wait()}) before {method}") from None
        deadline = time.monotonic() + seconds
        while (reply := self._receive(method, deadline)).get("id") != self._last_id:
            pass
        if "error" in reply:
            raise RuntimeError(f"chromium: {method}: {reply['error'].get('message')}")
        return dict(reply["result"])

    def _receive(self, method: str, deadline: float) -> dict[str, Any]:
        while (end := self._buffer.find(b"\0")) < 0:
            if not select.select([self._replies], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError(f"chromium did not answer {method}")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited (status {self._process.wait()}) before answering {method}")
            self._buffer += chunk
        message = json.loads(self._buffer[:end])
        del self._buffer[: end + 1]
        return dict(message)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("Browser.close", seconds=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # its renderers and helpers, in the session it leads
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()
        os.close(self._commands)
        os.close(self._replies)
        self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Installed in every document: querySelectorAll through every shadow root below `root` (TensorBoard's dashboards
# are Polymer elements, each with its own shadow root), and the dashboards' state as plain data.
_PAGE_SCRIPT = r"""
window.deepQuery = (selector, root = document) => {
  const found = [];
  const walk = (node) => {
    found.push(...node.querySelectorAll(selector));
    for (const element of node.querySelectorAll('*')) if (element.shadowRoot) walk(element.shadowRoot);
  };
  if (root.shadowRoot) walk(root.shadowRoot);
  walk(root);
  return found;
};
// The panes (tag groups, layout categories, the "Tags matching" pane) of the dashboard element `name`.
window.panes = (name) => {
  const dashboard = deepQuery(name)[0];
  return dashboard ? deepQuery('tf-category-paginated-view', dashboard).filter(p => p.category) : [];
};
// The "Tags matching <filter>" pane: TensorBoard's category type 0, SEARCH_RESULTS; named by a non-empty filter.
window.matchingPane = (name) => panes(name).find(p => p.category.metadata.type === 0 && p.category.name);
window.box = (element) => {
  const r = element.getBoundingClientRect();
  return {x: r.x, y: r.y, width: r.width, height: r.height};
};
window.imageCards = () => {
  const pane = matchingPane('tf-image-dashboard');
  return pane ? [...pane.querySelectorAll('tf-image-loader')].map(card => {
    const image = card.shadowRoot.querySelector('#main-image-container img');  // added once it loads or fails
    return {tag: card.tag, run: card.run, done: !!image && image.complete,
            loaded: !!image && image.complete && image.naturalWidth > 0,
            natural: image ? [image.naturalWidth, image.naturalHeight] : null,
            shown: image ? [image.getBoundingClientRect().width, image.getBoundingClientRect().height] : null};
  }) : null;
};
window.textCard = (card) => {
  const steps = [...card.shadowRoot.querySelectorAll('#steps-container tf-markdown-view')].map(  // not the heading's
      view => view.shadowRoot.querySelector('#markdown'));
  return {tag: card.tag, run: card.run, steps: steps.length, filled: steps.filter(m => m.innerText.trim()).length,
          // the server renders Markdown into paragraphs, lists, emphasis; with Markdown off, text stays text
          markdown: steps.filter(m => m.querySelector('p, li, strong, em, code, h1, h2, h3, h4, blockquote')).length,
          text: steps.length ? steps[0].innerText.slice(0, 60) : ''};
};
window.textCards = (everywhere = false) => {  // those of the "Tags matching" pane, or of every pane
  const root = everywhere ? deepQuery('tf-text-dashboard')[0] : matchingPane('tf-text-dashboard');
  return root ? deepQuery('tf-text-loader', root).map(textCard) : null;
};
window.charts = () => panes('tf-custom-scalar-dashboard').flatMap(pane => [...pane.querySelectorAll(
    'tf-custom-scalar-multi-line-chart-card, tf-custom-scalar-margin-chart-card')].map(card => ({
  category: pane.category.name,
  caption: deepQuery('figcaption', card).map(c => c.innerText.trim()).join(' '),
  lines: deepQuery('path.line', card).filter(path => (path.getAttribute('d') || '').length > 0).length})));
window.openAll = (name) => {  // TensorBoard opens only the first tag groups; a click on a heading opens the rest
  for (const pane of panes(name)) if (!pane.opened) pane.shadowRoot.querySelector('.heading').click();
};
"""


class Page:
    """A tab of `browser` at width x height CSS pixels and device scale 1."""

    def __init__(self, browser: Browser, width: int = WIDTH, height: int = HEIGHT) -> None:
        self._browser = browser
        target = browser.send("Target.createTarget", url="about:blank")["targetId"]
        self._session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.resize(width, height)
        self.send("Page.enable")  # without it, the script below is not added to new documents
        self.send("Page.addScriptToEvaluateOnNewDocument", source=_PAGE_SCRIPT)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        return self._browser.send(method, self._session, **params)

    def resize(self, width: int, height: int) -> None:
        self.size = (width, height)
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def open(self, url: str) -> None:
        """A new document (from about:blank: a URL that differs in its #fragment only would not reload)."""
        self.send("Page.navigate", url="about:blank")
        self.send("Page.navigate", url=url)
        origin = json.dumps(urllib.parse.urljoin(url, "/"))
        if not self.poll(f"location.href.startsWith({origin}) && typeof deepQuery === 'function'", bool):
            raise TimeoutError(f"chromium did not open {url}")

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('exception', result)}")
        return result["result"].get("value")

    def poll(self, expression: str, until: Callable[[Any], bool], seconds: float = 30) -> Any:
        """Evaluates `expression` until its value satisfies `until` or `seconds` pass; returns the last value."""
        deadline = time.monotonic() + seconds
        while not until(value := self.evaluate(expression)) and time.monotonic() < deadline:
            time.sleep(0.2)
        return value

    def screenshot(self, path: Path, clip: dict[str, float]) -> None:
        """A PNG of the clip, in CSS pixels from the viewport's top left."""
        area = {"x": math.floor(clip["x"]), "y": math.floor(clip["y"]), "scale": 1}
        area |= {"width": math.ceil(clip["width"]), "height": math.ceil(clip["height"])}
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png", clip=area)["data"]))


# --- the dashboards -----------------------------------------------------------------------------------------------


def show_images(page: Page, base: str, regex: str, count: int) -> list[dict[str, Any]]:
    """The Images dashboard filtered by `regex`, which `count` tags match: the cards of its "Tags matching" pane,
    its first page, once each image has loaded or failed (or 30 s have passed)."""
    page.open(f"{base}/#images&tagFilter={urllib.parse.quote(regex)}")
    wanted = min(count, PAGE_SIZE)
    done = page.poll("imageCards()", lambda v: v is not None and len(v) >= wanted and all(c["done"] for c in v))
    return list(done or [])  # None: no "Tags matching" pane (no image data at all)


def show_texts(page: Page, base: str, regex: str, count: int) -> list[dict[str, Any]]:
    """The Text dashboard filtered by `regex`, which `count` tags match: its "Tags matching" pane's cards."""
    page.open(f"{base}/#text&tagFilter={urllib.parse.quote(regex)}")
    wanted = min(count, PAGE_SIZE)
    return list(page.poll("textCards()", lambda v: texts_shown(v, wanted)) or [])


def texts_shown(cards: list[dict[str, Any]] | None, count: int) -> bool:
    """Whether at least `count` text cards are shown, each with every step's text filled in."""
    return cards is not None and len(cards) >= count and all(0 < c["filled"] == c["steps"] for c in cards)


def show_custom_scalars(page: Page, base: str, run: Run) -> list[dict[str, Any]]:
    """The Custom Scalars dashboard, smoothing 0, every category open: its charts once they draw what `run`
    holds (or 30 s have passed)."""
    # smoothing lives in the URL; "Ignore outliers in chart scaling" (on by default) in local storage: off, or a
    # series lying wholly beyond the others' range is scaled out of its chart
    page.open(f"{base}/#custom_scalars&_smoothingWeight=0")
    page.evaluate("localStorage.setItem('_ignoreYOutliers', 'false')")
    page.open(f"{base}/#custom_scalars&_smoothingWeight=0")
    page.poll("panes('tf-custom-scalar-dashboard').length", bool)
    page.evaluate("openAll('tf-custom-scalar-dashboard')")
    return list(page.poll("charts()", lambda v: not chart_problems(run, v)))


def exact_filters(tags: Sequence[str]) -> list[tuple[str, int]]:
    """Tag filters that match exactly these tags, a page of cards at a time; with the number each matches."""
    chunks = [tags[i : i + PAGE_SIZE] for i in range(0, len(tags), PAGE_SIZE)]
    return [("^(?:" + "|".join(re.escape(tag) for tag in chunk) + ")$", len(chunk)) for chunk in chunks]


def image_problems(tags: Sequence[str], cards: Sequence[dict[str, Any]]) -> list[str]:
    shown = {tag: [c for c in cards if c["tag"] == tag] for tag in tags}
    return [f"{tag}: no card" if not mine else f"{tag}: the image did not load" for tag, mine in shown.items()
            if not mine or not all(c["loaded"] for c in mine)]  # fmt: skip


def text_problems(tags: Sequence[str], cards: Sequence[dict[str, Any]]) -> list[str]:
    problems = []
    for tag in tags:
        mine = [c for c in cards if c["tag"] == tag]
        if not mine or not all(0 < c["filled"] == c["steps"] for c in mine):
            problems.append(f"{tag}: no card" if not mine else f"{tag}: no text shown")
        elif not all(c["markdown"] == c["steps"] for c in mine):
            problems.append(f"{tag}: Markdown not rendered ({mine[0]['text']!r})")
    return problems


def chart_problems(run: Run, charts: Sequence[dict[str, Any]]) -> list[str]:
    problems = []
    for chart in run.charts:
        mine = [c for c in charts if c["category"] == chart.category and c["caption"] == chart.title]
        if not mine:
            problems.append(f"{chart.category} / {chart.title}: not shown")
        elif mine[0]["lines"] < chart.lines:
            problems.append(f"{chart.category} / {chart.title}: {mine[0]['lines']} of {chart.lines} lines drawn")
    return problems
