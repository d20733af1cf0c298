"""The event file of a long run of the example's suite, written in seconds without training (a test helper).

:func:`fit_example_suite` trains the five monitors of ``examples/train_shapes.py`` for a few steps; :func:`read_suite`
takes from its event file what one probe step writes (scalar and text tags, the PNG of every image tag);
:func:`write_long_run` writes those tags at a long run's cadences, one record per value as the monitors' writer
does:

- at every probe (``probe_every`` steps): every scalar and text tag of the real run (tags the real run wrote at its
  last probe only, the parts with cadences of their own, every ``parts_every`` probes), the verdicts' scalars and
  the verdict text;
- at every learning-rate check (``check_every`` steps, between probes): ``verdict/learning_rate``,
  ``degree/learning_rate``, the learning rate and the loss numbers, and the verdict text where the learning-rate
  verdict changed;
- Lightning's ``train/loss``, ``train/accuracy`` and ``epoch`` every ``log_every`` steps, ``val/*`` every epoch;
- the images on the suite's thinning cadence only (:func:`image_steps`), with the real run's PNG bytes (or a tiny
  PNG where ``tiny_images``: the same counts, a small file).

The verdicts follow a fixed story (:func:`verdict_values`) so that a test knows the history to expect. The records
are framed here (TFRecord: length, its masked CRC32C, data, its masked CRC32C; :class:`EventWriter`) from protos
built directly: SummaryWriter's ``add_scalar`` is several times slower per value, too slow for a test's 130,000.
"""

from __future__ import annotations

import math
import struct
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.compat.proto.tensor_pb2 import TensorProto

from lightning_viz.callbacks._writer import masked_crc32c
from lightning_viz.diagnostics.verdicts import LABELS, NAMES, TEXT_TAG, Verdict, verdict_text

LIGHTNING_TAGS = ("train/", "val/", "test/", "epoch", "hp_metric", "_hparams_/")
"""Tags Lightning writes, not the suite (the long run writes its own at Lightning's cadences)."""

LEARNING_RATE_PREFIX = "diagnostics/lr/"
LEARNING_RATE_TAG = f"{LEARNING_RATE_PREFIX}pg0"
"""The learning rate, written at every learning-rate check (probes included)."""

CHECK_SCALARS = (
    "diagnostics/loss_progress",
    "diagnostics/loss_spike",
    "diagnostics/loss_recent_progress",
    "diagnostics/loss_rise",
)
"""The loss numbers a learning-rate check between probes writes (a probe writes them with its others)."""

TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c49444154789c63606060000000040001f617"
    "38550000000049454e44ae426082"
)
"""A 1x1 RGB PNG."""


def tiny_image() -> Summary.Image:
    """A 1x1 image summary."""
    return Summary.Image(height=1, width=1, colorspace=3, encoded_image_string=TINY_PNG)


def image_spacing(step: int) -> int:
    """The images' spacing at ``step``: 100 up to step 2000, then doubled at each octave (ten images per doubling)."""
    return 100 * 2 ** math.floor(math.log2(max(1.0, step / 1000)))


def image_steps(steps: int, probe_every: int = 100) -> list[int]:
    """The probe steps of a run of ``steps`` steps that write images: 0, the last, and those on the spacing."""
    probes = range(0, steps + 1, probe_every)
    return [s for s in probes if s in (0, steps) or s % image_spacing(s) == 0]


def verdict_values(step: int, steps: int) -> dict[str, int | None]:
    """The story the long run's verdicts tell: the learning rate abstains for 100 steps, is ok, too high for 200 steps
    from the check after 30 % of the run (a change between probes), too low from 90 %; the kernel abstains until 1 %,
    is larger than it uses until half-way, then ok; the stride abstains until 2 %, is ok, aliasing from 70 %."""
    f, high = step / steps, steps * 3 // 10 // 100 * 100 + 50
    learning_rate = None if step < 100 else 1 if high <= step < high + 200 else -1 if f >= 0.9 else 0
    kernel_size = None if f < 0.01 else 1 if f < 0.5 else 0
    stride = None if f < 0.02 else 1 if f >= 0.7 else 0
    return {"kernel_size": kernel_size, "stride": stride, "learning_rate": learning_rate}


def _text(values: dict[str, int | None], step: int) -> str:
    def line(name: str, value: int | None) -> str:
        return "… not enough evidence yet" if value is None else f"{'✓' if value == 0 else '✗'} {LABELS[name][value]}"

    return verdict_text([Verdict(name, value, line(name, value)) for name, value in values.items()], step)


@dataclass
class Suite:
    """What one probe step of the example's suite writes, from a short real run's events.

    Attributes:
        scalars: scalar tags written at every probe (the verdicts' own are left out: the long run writes its story).
        part_scalars: scalar tags written at the last probe only (parts with cadences of their own).
        texts: text tags written at every probe (their summary tag, ``<tag>/text_summary``) -> a text the run wrote.
        final_texts: the same for the text tags written once, at the end (the budget's account).
        images: image tag -> its Summary.Image (PNG bytes and size) at the last probe.
        once: serialized records written once, at the start (the Custom Scalars layout).
    """

    scalars: list[str] = field(default_factory=list)
    part_scalars: list[str] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    final_texts: dict[str, str] = field(default_factory=dict)
    images: dict[str, Summary.Image] = field(default_factory=dict)
    once: list[bytes] = field(default_factory=list)

    @property
    def image_bytes(self) -> int:
        return sum(image.ByteSize() for image in self.images.values())


def fit_example_suite(logdir: Path, steps: int = 4) -> Path:
    """Train ShapesNet for ``steps`` steps with the monitors ``examples/train_shapes.py`` attaches (probing every 2
    steps and at the last); returns the event file."""
    from pytorch_lightning import Trainer, seed_everything
    from pytorch_lightning.loggers import TensorBoardLogger
    from torch.utils.data import DataLoader

    from lightning_viz import (
        DeconvNetMonitor,
        ExplanationQualityMonitor,
        FilterMonitor,
        GradCAMMonitor,
        TrainingDiagnostics,
    )
    from lightning_viz.data import Shapes
    from lightning_viz.demos import ShapesNet

    seed_everything(0)
    every = 2
    callbacks = [
        GradCAMMonitor(every_n_steps=every),
        DeconvNetMonitor(every_n_steps=every),
        FilterMonitor(every_n_steps=every, activation_max_every_n_steps=steps),
        TrainingDiagnostics(every_n_steps=every),
        ExplanationQualityMonitor(every_n_steps=every, early_steps=()),
    ]
    logger = TensorBoardLogger(str(logdir), name="suite")
    trainer = Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=logger, callbacks=callbacks,
                      log_every_n_steps=10, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(ShapesNet(), DataLoader(Shapes(64, seed=0), batch_size=16, shuffle=True))
    (event_file,) = Path(logger.log_dir).glob("events.out.tfevents.*")
    return event_file


def _records(path: Path) -> list[bytes]:
    data, records, at = path.read_bytes(), [], 0
    while at + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, at)
        records.append(data[at + 12 : at + 12 + length])
        at += 12 + length + 4
    return records


def read_suite(event_file: Path) -> Suite:
    """The tags and payloads of a short real run of the suite (:func:`fit_example_suite`)."""
    scalars: dict[str, set[int]] = defaultdict(set)
    texts: dict[str, set[int]] = defaultdict(set)
    suite = Suite()
    for record in _records(event_file):
        event = Event.FromString(record)
        for value in event.summary.value:
            kind, tag = value.WhichOneof("value"), value.tag
            if tag.startswith(LIGHTNING_TAGS):
                continue
            if kind == "simple_value":
                scalars[tag].add(event.step)
            elif kind == "image":
                suite.images[tag] = value.image
            elif kind == "tensor" and value.metadata.plugin_data.plugin_name == "text":
                suite.texts[tag] = value.tensor.string_val[0].decode()
                texts[tag].add(event.step)
            elif kind == "tensor" and tag not in texts:  # the Custom Scalars layout and other configurations
                suite.once.append(record)
    last = max(max(steps) for steps in scalars.values())
    for tag, steps in sorted(scalars.items()):
        if not tag.startswith(("verdict/", "degree/", LEARNING_RATE_PREFIX)):  # the long run writes its own
            (suite.scalars if len(steps) > 1 else suite.part_scalars if last in steps else []).append(tag)
    suite.texts.pop(f"{TEXT_TAG}/text_summary", None)  # the long run writes its story's
    for tag in [tag for tag in suite.texts if len(texts[tag]) == 1]:
        suite.final_texts[tag] = suite.texts.pop(tag)
    return suite


@dataclass
class LongRun:
    """What :func:`write_long_run` wrote.

    Attributes:
        event_file: the event file.
        steps: the last step.
        counts: plugin (TensorBoard's name: ``scalars``, ``images``, ``text``) -> tag -> records written (one a step).
        history: every step with a verdict (probes, and learning-rate checks that logged one or a text) -> each
            verdict's value, the kernel's and the stride's at a check being the latest probe's (none while the
            learning rate is too high).
        text_steps: the steps with a verdict text.
    """

    event_file: Path
    steps: int
    counts: dict[str, dict[str, int]]
    history: dict[int, dict[str, int | None]]
    text_steps: list[int]

    @property
    def megabytes(self) -> float:
        return self.event_file.stat().st_size / 1e6


class EventWriter:
    """Writes Summary values as TFRecords, one event each, counting them per plugin and tag.

    Args:
        file: the event file, open for writing bytes.
        start: the wall time of step 0 (a step takes 50 ms).
    """

    def __init__(self, file: BinaryIO, start: float = 1_700_000_000.0) -> None:
        self.file, self.start = file, start
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._text_metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="text"))

    def raw(self, data: bytes) -> None:
        """One record: its length, the length's masked CRC32C, ``data``, its masked CRC32C."""
        header = struct.pack("<Q", len(data))
        self.file.write(header + struct.pack("<I", masked_crc32c(header)))
        self.file.write(data)
        self.file.write(struct.pack("<I", masked_crc32c(data)))

    def value(self, step: int, plugin: str, value: Summary.Value) -> None:
        event = Event(wall_time=self.start + 0.05 * step, step=step, summary=Summary(value=[value]))
        self.raw(event.SerializeToString())
        self.counts[plugin][value.tag] += 1

    def scalar(self, step: int, tag: str, number: float) -> None:
        self.value(step, "scalars", Summary.Value(tag=tag, simple_value=number))

    def text(self, step: int, tag: str, text: str) -> None:
        """``tag``: the summary's tag, ``<tag>/text_summary`` for SummaryWriter's ``add_text(tag, ...)``."""
        tensor = TensorProto(dtype=7, string_val=[text.encode()], tensor_shape={"dim": [{"size": 1}]})  # DT_STRING
        self.value(step, "text", Summary.Value(tag=tag, metadata=self._text_metadata, tensor=tensor))


def write_long_run(
    directory: Path,
    suite: Suite,
    steps: int = 100_000,
    probe_every: int = 100,
    check_every: int = 50,
    parts_every: int = 5,
    log_every: int = 10,
    epoch_steps: int = 1000,
    tiny_images: bool = False,
) -> LongRun:
    """Write the event file of a ``steps``-step run of ``suite`` into ``directory`` (see the module docstring)."""
    directory.mkdir(parents=True, exist_ok=True)
    event_file = directory / "events.out.tfevents.1700000000.long.1.0"
    images = suite.images
    if tiny_images:
        images = dict.fromkeys(images, tiny_image())
    with_images = set(image_steps(steps, probe_every))
    history: dict[int, dict[str, int | None]] = {}
    text_steps: list[int] = []
    judged: dict[str, int | None] = {}  # the latest probe's kernel and stride verdicts
    said: int | None = None  # the learning-rate verdict of the latest text
    with event_file.open("wb") as file:
        out = EventWriter(file, 1_700_000_000.0)
        out.raw(Event(wall_time=out.start, file_version="brain.Event:2").SerializeToString())
        for record in suite.once:
            out.raw(record)
        for step in range(steps + 1):
            if step % log_every == 0 and step > 0:
                out.scalar(step, "train/loss", 1.0 / (1 + step / 1000))
                out.scalar(step, "train/accuracy", 1 - 0.8 / (1 + step / 1000))
                out.scalar(step, "epoch", step // epoch_steps)
            if step % epoch_steps == 0 and step > 0:
                out.scalar(step, "val/loss", 1.0 / (1 + step / 1000))
                out.scalar(step, "val/accuracy", 1 - 0.8 / (1 + step / 1000))
            probe, check = step % probe_every == 0 or step == steps, step % check_every == 0
            if not (probe or check):
                continue
            story = verdict_values(step, steps)
            rate = story["learning_rate"]
            if probe:
                judged = {"kernel_size": story["kernel_size"], "stride": story["stride"]}
                for tag in suite.scalars:
                    out.scalar(step, tag, 0.5)
                if step // probe_every % parts_every == 0 or step == steps:
                    for tag in suite.part_scalars:
                        out.scalar(step, tag, 0.5)
            else:
                for tag in CHECK_SCALARS:
                    out.scalar(step, tag, 0.5)
            if check:
                out.scalar(step, LEARNING_RATE_TAG, 0.02)
            # the kernel and stride verdicts abstain while the rate is too high (unless_too_high)
            values = {name: None if rate == 1 else value for name, value in judged.items()} | {"learning_rate": rate}
            for name in NAMES if probe else ("learning_rate",):
                if (value := values[name]) is not None:
                    out.scalar(step, f"verdict/{name}", float(value))
                    out.scalar(step, f"degree/{name}", 1.5 + step / steps)
            told = probe or rate != said  # a check writes the text where the rate's verdict changed
            if told:
                out.text(step, f"{TEXT_TAG}/text_summary", _text(values, step))
                text_steps.append(step)
                said = rate
            if told or rate is not None:
                history[step] = values
            if probe:
                for tag, text in suite.texts.items():
                    out.text(step, tag, text)
            if step == steps:
                for tag, text in suite.final_texts.items():
                    out.text(step, tag, text)
            if step in with_images:
                for tag, image in images.items():
                    out.value(step, "images", Summary.Value(tag=tag, image=image))
    counts = {plugin: dict(tags) for plugin, tags in out.counts.items()}
    return LongRun(event_file, steps, counts, history, text_steps)
