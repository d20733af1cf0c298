"""The documentation stays honest: its links resolve, its commands run, its code compiles.

What is checked, in README.md, docs/*.md and benchmarks/README.md:

- Every relative link (``[text](path)``, ``![alt](path)``, ``<img src=...>``) names a file of the repository, and a
  ``#anchor`` names a heading of that file (GitHub's anchors: lower case, punctuation dropped, spaces as hyphens).
- Every command in a fenced ``bash``/``sh``/``shell``/``console`` block of README.md and docs/*.md runs here and exits
  0, unless it is marked long, with its measured time, in one of two visible ways:

  - a trailing comment on the command line: ``python benchmarks/gradcam_cost.py  # long: 34 s``;
  - an HTML comment on the line before the block, for all of its commands: ``<!-- long: 27.8 min on 2 cores -->``.

  An unmarked command that fails, or a mark without a time, fails the test. The commands run once each (a command
  shown on several pages runs once), in document order within a page, in a scratch directory holding copies of
  ``examples/`` and ``benchmarks/`` (so that nothing they write lands in the repository), with ``python``,
  ``.venv/bin/python`` and ``lightning-viz`` meaning this interpreter's. The example's ``--fast`` run goes first, so
  ``lightning-viz report runs`` has a run to read.
- Every ``python`` block compiles; a block marked ``<!-- docs-test: run -->`` on the line before it also runs, in a
  fresh process in the scratch directory, with ``model`` (a tiny ``LightningModule`` of the block's Lightning package
  with layers ``layer3`` and ``layer4``), ``train_loader``, ``val_loader`` (32 and 16 ``Shapes`` images) and
  ``images`` (4 of them) defined, and every ``Trainer`` limited to 3 steps on the CPU through Lightning's
  ``PL_TRAINER_*`` environment defaults.

The README's two commands are marked long: command 2 is what CI runs (``.ci/run``, checked below to run exactly it),
and command 1 installs the package (as CI's install does) and runs the full example, whose ``--fast`` smoke run is
run here and whose full run ``tests/test_monitor_training.py`` and the browser test cover in part.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
LINKED = [*PAGES, ROOT / "benchmarks" / "README.md"]
SHELL = {"bash", "sh", "shell", "console"}
LONG = re.compile(r"#\s*long:\s*(?P<time>.*)$")
LONG_BLOCK = re.compile(r"<!--\s*long:\s*(?P<time>.*?)\s*-->")
RUN_BLOCK = re.compile(r"<!--\s*docs-test:\s*run\s*-->")
A_TIME = re.compile(r"\d+(\.\d+)?\s*(ms|s|sec|seconds|min|minutes|h|hours)\b")
FAST_EXAMPLE = "python examples/train_shapes.py --fast"
TIMEOUT = 300


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    text: str
    before: str  # the last non-blank line before the fence


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page."""
    found: list[Block] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^(\s*)(```+|~~~+)\s*([\w+-]*)", lines[i])
        if not fence:
            i += 1
            continue
        indent, marker, language = fence.groups()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(marker):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        before = next((x.strip() for x in reversed(lines[:i]) if x.strip()), "")
        found.append(Block(page, i + 1, language.lower(), "\n".join(body), before))
        i = j + 1
    return found


def commands(block: Block) -> list[str]:
    """The commands of a shell block: comment lines dropped, continued lines joined, a leading ``$ `` removed."""
    out: list[str] = []
    pending = ""
    for raw in block.text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        line = line.removeprefix("$ ")
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    return out


def long_mark(block: Block, command: str) -> str | None:
    """The time a command is marked long with, or None when it is not marked."""
    for mark in (LONG_BLOCK.search(block.before), LONG.search(command)):
        if mark:
            return mark["time"]
    return None


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


# -- links ------------------------------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    names: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in page.read_text().splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_code = not in_code
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading and not in_code:
            base = slug(heading[1])
            count = seen.get(base, 0)
            seen[base] = count + 1
            names.add(base if count == 0 else f"{base}-{count}")
    return names


def links(page: Path) -> list[tuple[int, str]]:
    """Relative link targets of a page, with their line numbers (code blocks and inline code left out)."""
    found: list[tuple[int, str]] = []
    in_code = False
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.lstrip().startswith(("```", "~~~")):
            in_code = not in_code
            continue
        if in_code:
            continue
        line = re.sub(r"`[^`]*`", "", line)
        targets = re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", line)
        targets += re.findall(r"<img[^>]*\ssrc=\"([^\"]+)\"", line)
        found += [(number, t) for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]
    return found


@pytest.mark.parametrize("page", LINKED, ids=_rel)
def test_relative_links_resolve(page: Path) -> None:
    assert page.exists(), f"{_rel(page)} is missing"
    broken = []
    for number, target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{_rel(page)}:{number}: {target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{_rel(page)}:{number}: {target} (no heading #{anchor} in {file.name})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme_and_the_index() -> None:
    readme = {t.partition("#")[0] for _, t in links(ROOT / "README.md")}
    index = {t.partition("#")[0] for _, t in links(ROOT / "docs" / "README.md")}
    for page in (ROOT / "docs").glob("*.md"):
        if page.name != "README.md":
            assert f"docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"
            assert page.name in index, f"docs/README.md does not link {page.name}"


def test_every_benchmark_is_listed_with_its_command() -> None:
    listing = (ROOT / "benchmarks" / "README.md").read_text()
    helpers = {"_timing.py", "worlds.py"}  # imported by the benchmarks, not run
    missing = [p.name for p in (ROOT / "benchmarks").glob("*.py") if p.name not in helpers]
    missing = [name for name in missing if f"python benchmarks/{name}" not in listing]
    assert not missing, f"benchmarks/README.md lists no command for {missing}"


# -- the README's commands and CI -----------------------------------------------------------------------------------


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    (two,) = [b for b in blocks(ROOT / "README.md") if "pytest" in b.text and b.language in SHELL]
    test_command = next(c for c in commands(two) if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()
    assert "examples/train_shapes.py" in commands(two)[0]  # command 1: install, then the example


def test_the_readmes_first_screen_holds_the_commands_and_the_usage() -> None:
    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:60])
    assert "## Two commands" in first_screen and "## Usage" in first_screen
    assert "callbacks=[" in first_screen and "trainer.fit(" in first_screen


def test_no_page_speaks_of_how_the_project_was_made() -> None:
    history = re.compile(r"this session|this round|earlier session|previous session|\bissue \d+|\bround \d+", re.I)
    pages = [*LINKED, ROOT / "CHANGELOG.md", *(ROOT / "benchmarks").glob("*.md")]
    found = [
        f"{_rel(p)}:{n}: {line.strip()}"
        for p in pages
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if history.search(line)
    ]
    assert not found, "\n".join(found)


# -- shell commands ---------------------------------------------------------------------------------------------------


def shell_commands() -> list[tuple[Block, str]]:
    return [(b, c) for page in PAGES for b in blocks(page) if b.language in SHELL for c in commands(b)]


def test_long_commands_say_how_long() -> None:
    vague = [
        f"{_rel(b.page)}:{b.line}: {c}" for b, c in shell_commands() if (t := long_mark(b, c)) and not A_TIME.search(t)
    ]
    assert not vague, "marked long without a measured time:\n" + "\n".join(vague)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory with copies of the example and benchmark scripts (and what they read), where the
    documented commands may write what they like."""
    where = tmp_path_factory.mktemp("docs")
    ignore = shutil.ignore_patterns("__pycache__", "*.png", "screenshots")
    for folder in ("examples", "benchmarks"):
        shutil.copytree(ROOT / folder, where / folder, ignore=ignore)
    (where / "tests").mkdir()
    shutil.copytree(ROOT / "tests" / "checkpoints", where / "tests" / "checkpoints", ignore=ignore)
    return where


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def runnable(command: str) -> list[str]:
    """A documented command as argv for this interpreter; ``python3 -m venv`` and pipes are not expected here."""
    bin_dir = Path(sys.executable).parent
    argv = shlex.split(command, comments=True)
    assert not {"&&", "|", ";", ">"} & set(argv), f"a documented quick command must be one command: {command}"
    program = argv[0].removeprefix(".venv/bin/")
    if program in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    if (bin_dir / program).exists():
        return [str(bin_dir / program), *argv[1:]]
    raise AssertionError(f"not a command this test knows how to run: {command} (mark it long, with its time)")


def test_documented_commands_run(scratch: Path) -> None:
    quick = [(b, c) for b, c in shell_commands() if long_mark(b, c) is None]
    order = {c: i for i, (_, c) in enumerate(quick)}
    distinct: dict[tuple[str, ...], tuple[str, Block]] = {}  # one run per command, however it is spelled
    for block, command in sorted(quick, key=lambda bc: (bc[1] != FAST_EXAMPLE, order[bc[1]])):
        distinct.setdefault(tuple(runnable(command)), (command, block))
    if tuple(runnable(FAST_EXAMPLE)) not in distinct:  # lightning-viz report needs a run to read
        distinct = {tuple(runnable(FAST_EXAMPLE)): (FAST_EXAMPLE, blocks(ROOT / "README.md")[0]), **distinct}
    failures = []
    for argv, (command, block) in distinct.items():
        done = subprocess.run(
            list(argv), cwd=scratch, env=_environment(), capture_output=True, text=True, timeout=TIMEOUT
        )
        # lightning-viz report exits 1 when a latest verdict is not ok: the command worked, the run is what it is
        ok = {0, 1} if "report" in argv[1:2] else {0}
        if done.returncode not in ok:
            tail = (done.stdout + done.stderr)[-2000:]
            failures.append(f"{_rel(block.page)}:{block.line}: {command} exited {done.returncode}\n{tail}")
    assert not failures, "\n\n".join(failures)


# -- python blocks ----------------------------------------------------------------------------------------------------


def python_blocks() -> list[Block]:
    return [b for page in PAGES for b in blocks(page) if b.language in ("python", "py", "python3")]


@pytest.mark.parametrize("block", python_blocks(), ids=lambda b: f"{_rel(b.page)}:{b.line}")
def test_python_blocks_compile(block: Block) -> None:
    compile(block.text, f"{_rel(block.page)}:{block.line}", "exec")


PRELUDE = """
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from {package} import LightningModule
from lightning_viz.data import Shapes


class TinyNet(LightningModule):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 5, stride=2, padding=2)
        self.layer3 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.layer4 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(16, 6)

    def forward(self, x):
        return self.fc(self.layer4(self.layer3(F.relu(self.conv1(x)))).mean(dim=(2, 3)))

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


torch.manual_seed(0)
model = TinyNet()
train_loader = DataLoader(Shapes(32, seed=0), batch_size=8)
val_loader = DataLoader(Shapes(16, seed=1), batch_size=8)
images = next(iter(val_loader))[0][:4]
"""


@pytest.mark.parametrize(
    "block", [b for b in python_blocks() if RUN_BLOCK.search(b.before)], ids=lambda b: f"{_rel(b.page)}:{b.line}"
)
def test_python_blocks_marked_run_run(block: Block, scratch: Path) -> None:
    package = "lightning.pytorch" if "lightning.pytorch" in block.text else "pytorch_lightning"
    script = PRELUDE.format(package=package) + "\n# the block\n" + textwrap.dedent(block.text)
    env = _environment()
    env.update(
        PL_TRAINER_MAX_STEPS="3",
        PL_TRAINER_ACCELERATOR="cpu",
        PL_TRAINER_ENABLE_PROGRESS_BAR="False",
        PL_TRAINER_ENABLE_MODEL_SUMMARY="False",
        PL_TRAINER_ENABLE_CHECKPOINTING="False",
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=scratch, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, f"{_rel(block.page)}:{block.line} failed:\n{(done.stdout + done.stderr)[-3000:]}"
