"""The dashboards in a real browser: a short run of the example, TensorBoard on 127.0.0.1 and headless Chromium at
TensorBoard's default size (1600x1200); every image tag, custom-scalars chart and text tag the run's event files hold
must render. Skipped without the `chromium` command, unless LIGHTNING_VIZ_REQUIRE_BROWSER=1 (as in .ci/run)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightning_viz.demos.tensorboard_view import (
    HEIGHT,
    WIDTH,
    Browser,
    Page,
    Run,
    chart_problems,
    exact_filters,
    image_problems,
    read_run,
    show_custom_scalars,
    show_images,
    show_texts,
    tensorboard,
    text_problems,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_shapes.py"


@pytest.fixture(scope="module")
def dashboards(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Run, Page, str]]:
    if shutil.which("chromium") is None:
        reason = "no `chromium` command for the browser test (Debian: apt-get install chromium; .ci/run installs it)"
        if os.environ.get("LIGHTNING_VIZ_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason}, and LIGHTNING_VIZ_REQUIRE_BROWSER=1 requires it")
        pytest.skip(reason)
    logdir = tmp_path_factory.mktemp("browser")
    example = subprocess.run([sys.executable, str(EXAMPLE), "--fast", "--logdir", str(logdir)],
                             capture_output=True, text=True, timeout=180)  # fmt: skip
    assert example.returncode == 0, f"train_shapes.py --fast failed:\n{example.stderr[-3000:]}"
    (run_dir,) = {p.parent for p in logdir.glob("*/version_*/events.out.tfevents.*")}
    run = read_run(run_dir)
    assert run.images and run.texts and run.charts, f"the example logged too little to check: {run}"
    with tensorboard(logdir, run) as base, Browser() as browser:
        yield run, Page(browser, WIDTH, HEIGHT), base


def test_every_image_tag_renders_in_the_images_dashboard(
    dashboards: tuple[Run, Page, str], capsys: pytest.CaptureFixture[str]
) -> None:
    run, page, base = dashboards
    cards = []
    for regex, count in exact_filters(run.images):  # groups past the second start closed; 12 cards a page
        cards += show_images(page, base, regex, count)
    problems = image_problems(run.images, cards)
    assert not problems, "image tags that did not render in the Images dashboard:\n  " + "\n  ".join(problems)
    with capsys.disabled():  # the card scale, to size panels by
        print(f"\nImages dashboard at {WIDTH}x{HEIGHT}: natural size -> shown size (CSS px), scale")
        for card in sorted(cards, key=lambda c: c["tag"]):
            (w, h), (shown_w, shown_h) = card["natural"], card["shown"]
            print(f"  {card['tag']}: {w}x{h} -> {shown_w:g}x{shown_h:g}, {shown_w / w:.3f}")


def test_every_chart_of_the_layout_draws_its_lines_in_the_custom_scalars_dashboard(
    dashboards: tuple[Run, Page, str], capsys: pytest.CaptureFixture[str]
) -> None:
    run, page, base = dashboards
    problems = chart_problems(run, show_custom_scalars(page, base, run))
    assert not problems, "custom-scalars charts that did not render:\n  " + "\n  ".join(problems)
    without_lines = [f"{chart.category} / {chart.title}" for chart in run.charts if not chart.lines]
    if without_lines:
        with capsys.disabled():
            print("\nCharts whose series have under two points in this short run (title checked, not lines):")
            print("  " + "\n  ".join(without_lines))


def test_every_text_tag_renders_its_markdown_in_the_text_dashboard(dashboards: tuple[Run, Page, str]) -> None:
    run, page, base = dashboards
    cards = []
    for regex, count in exact_filters(run.texts):
        cards += show_texts(page, base, regex, count)
    problems = text_problems(run.texts, cards)
    assert not problems, "text tags that did not render in the Text dashboard:\n  " + "\n  ".join(problems)
