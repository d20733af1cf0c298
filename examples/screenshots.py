"""Regenerate the README's screenshots: the example's runs in TensorBoard, at its default size, in headless Chromium.

    python examples/screenshots.py                  # trains the three runs (8 epochs each), then takes the pictures
    python examples/screenshots.py --reuse          # takes them of the runs an earlier call left in --logdir
    python examples/screenshots.py --images gradcam 'filters/conv1'   # other image tag groups (regexes)

The runs are examples/train_shapes.py as healthy (its defaults), lr0.2 (--lr 0.2) and k11s4 (--kernel 11 --stride 4),
each trained into --logdir/<config>. Each is served alone by TensorBoard on 127.0.0.1 and shown in Debian's chromium,
headless, at 1600x1200 CSS pixels (TensorBoard's default size) and device scale 1, with TensorBoard's default settings
except scalar smoothing 0 (verdicts are step functions; smoothing would draw them as ramps). Writes, into
examples/screenshots/:

    <config>_images_<regex>.png          the Images dashboard filtered by the regex: its "Tags matching" pane
    <config>_custom_scalars_<category>.png   each category of the run's custom-scalars layout
    <config>_text.png                    the Text dashboard, every tag group expanded

A tag that does not render stops the script. tests/test_browser.py checks the dashboards with the same helpers.
Needs the `chromium` command (Debian: apt-get install chromium); no network beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
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

WIDTH, HEIGHT = 1600, 1200  # TensorBoard's default size, in CSS pixels
PAGE_SIZE = 12  # cards on one page of a tag group, TensorBoard's default ("TF.TensorBoard.PaginatedView.limit")
EXAMPLE = Path(__file__).with_name("train_shapes.py")
CONFIGS = {"healthy": [], "lr0.2": ["--lr", "0.2"], "k11s4": ["--kernel", "11", "--stride", "4"]}


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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
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
                served = [set().union(*_get(f"{base}/data/plugin/{p}/tags").values()) for p in ("images", "text")]
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
    return list(page.poll("textCards()", lambda v: _texts_shown(v, wanted)) or [])


def _texts_shown(cards: list[dict[str, Any]] | None, count: int) -> bool:
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


# --- the screenshots ----------------------------------------------------------------------------------------------


def _fit(page: Page, boxes_js: str) -> dict[str, float]:
    """Makes the viewport tall enough for the boxes (TensorBoard's dashboards scroll inside a column of the
    viewport's height; the width, which sets the layout, stays); returns the box around them all."""
    boxes = page.evaluate(boxes_js)
    bottom = max(b["y"] + b["height"] for b in boxes)
    if bottom + 16 > page.size[1]:
        page.resize(page.size[0], math.ceil(bottom + 16))
        time.sleep(1)  # charts redraw on resize
        boxes = page.evaluate(boxes_js)
    x, y = min(b["x"] for b in boxes), min(b["y"] for b in boxes)
    right, bottom = max(b["x"] + b["width"] for b in boxes), max(b["y"] + b["height"] for b in boxes)
    return {"x": x, "y": y, "width": right - x, "height": bottom - y}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_") or "all"


def take_screenshots(page: Page, base: str, run: Run, config: str, image_regexes: Sequence[str], out: Path) -> None:
    problems: list[str] = []
    for regex in image_regexes:
        tags = [tag for tag in run.images if re.search(regex, tag)]
        if not tags:
            print(f"  {config}: no image tag matches {regex!r}; skipped")
            continue
        cards = show_images(page, base, regex, len(tags))
        problems += image_problems(tags[:PAGE_SIZE], cards)
        shot = out / f"{config}_images_{_slug(regex)}.png"
        page.screenshot(shot, _fit(page, "[box(matchingPane('tf-image-dashboard'))]"))
        page.resize(WIDTH, HEIGHT)
        print(f"  {shot} ({len(tags)} tags{f', the first {PAGE_SIZE} shown' if len(tags) > PAGE_SIZE else ''})")

    charts = show_custom_scalars(page, base, run)
    problems += chart_problems(run, charts)
    for category in dict.fromkeys(chart.category for chart in run.charts):
        shot = out / f"{config}_custom_scalars_{_slug(category)}.png"
        pane = f"[box(panes('tf-custom-scalar-dashboard').find(p => p.category.name === {json.dumps(category)}))]"
        page.screenshot(shot, _fit(page, pane))
        print(f"  {shot}")
    page.resize(WIDTH, HEIGHT)

    if run.texts:
        page.open(f"{base}/#text")
        page.poll("panes('tf-text-dashboard').length", bool)
        page.evaluate("openAll('tf-text-dashboard')")
        cards = page.poll("textCards(true)", lambda v: _texts_shown(v, min(len(run.texts), PAGE_SIZE)))
        problems += text_problems([c["tag"] for c in cards], cards)
        shot = out / f"{config}_text.png"
        page.screenshot(shot, _fit(page, "panes('tf-text-dashboard').filter(p => p.offsetHeight).map(box)"))
        page.resize(WIDTH, HEIGHT)
        print(f"  {shot}")
    if problems:
        raise SystemExit(f"{config}: did not render in TensorBoard:\n  " + "\n  ".join(problems))


def newest_run(logdir: Path) -> Path | None:
    """The newest version_* directory under logdir holding an event file."""
    runs = [p.parent for p in logdir.glob("*/version_*/events.out.tfevents.*")]
    return max(runs, key=lambda p: p.stat().st_mtime, default=None)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logdir", type=Path, default=Path("runs/screenshots"), help="the runs go to LOGDIR/<config>")
    parser.add_argument("--epochs", type=int, help="passed to train_shapes.py (its default: 8)")
    parser.add_argument("--fast", action="store_true", help="train_shapes.py --fast: a smoke run of the script")
    parser.add_argument("--reuse", action="store_true", help="take the newest run in LOGDIR/<config> if there is one")
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--images", nargs="+", default=["gradcam", "deconvnet", "filters"], metavar="REGEX",
                        help="image tag filters, one screenshot each")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("screenshots"))
    parser.add_argument("--chromium", default="chromium", help="the browser's command")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    with Browser(args.chromium) as browser:
        page = Page(browser)
        for config in args.configs:
            run_dir = newest_run(args.logdir / config) if args.reuse else None
            if run_dir is None:
                command = [sys.executable, str(EXAMPLE), *CONFIGS[config], "--logdir", str(args.logdir / config)]
                if args.epochs is not None:
                    command += ["--epochs", str(args.epochs)]
                if args.fast:
                    command.append("--fast")
                print(f"{config}: {' '.join(command[1:])}")
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
                run_dir = newest_run(args.logdir / config)
                assert run_dir is not None, f"train_shapes.py wrote no run under {args.logdir / config}"
            print(f"{config}: {run_dir}")
            run = read_run(run_dir)
            with tempfile.TemporaryDirectory() as served:  # this run alone, under its name without the version
                (Path(served) / run_dir.parent.name).symlink_to(run_dir.resolve())
                with tensorboard(Path(served), run) as base:
                    take_screenshots(page, base, run, config, args.images, args.out)


if __name__ == "__main__":
    main()
