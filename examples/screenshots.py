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

A tag that does not render stops the script. The TensorBoard server and the browser are those of
lightning_viz.demos.tensorboard_view, with which tests/test_browser.py checks the dashboards.
Needs the `chromium` command (Debian: apt-get install chromium); no network beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from lightning_viz.demos.tensorboard_view import (
    HEIGHT,
    PAGE_SIZE,
    WIDTH,
    Browser,
    Page,
    Run,
    chart_problems,
    image_problems,
    read_run,
    show_custom_scalars,
    show_images,
    tensorboard,
    text_problems,
    texts_shown,
)

EXAMPLE = Path(__file__).with_name("train_shapes.py")
CONFIGS = {"healthy": [], "lr0.2": ["--lr", "0.2"], "k11s4": ["--kernel", "11", "--stride", "4"]}


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
        cards = page.poll("textCards(true)", lambda v: texts_shown(v, min(len(run.texts), PAGE_SIZE)))
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
