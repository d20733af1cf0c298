"""The base every lightning_viz monitor shares: when to probe, on which rank, on which images, without side
effects, and what to do when something fails.

A monitor subclass says which layers it wants by default, what the shared forward pass must capture for it
(:meth:`ProbeMonitor.needs`) and what one probe computes from the shared
:class:`~lightning_viz.probing.ProbeContext` (:meth:`ProbeMonitor.compute`). The monitors of one trainer probe
together (:mod:`lightning_viz.callbacks._session`): one isolation and one forward pass per probe step, results
rendered and written by a background thread, probes spaced to keep a cost budget.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor, nn

from lightning_viz._namespace import PACKAGES, Namespace
from lightning_viz.callbacks._session import ProbeSession, _Due, forget_session, session_for
from lightning_viz.callbacks._writer import Image, Written
from lightning_viz.methods import conv_layer_names, isolated, resolve_layer
from lightning_viz.methods._outputs import (
    OutputSpec,
    as_classifier,
    describe_output,
    select_logits,
    suggest_output,
)
from lightning_viz.probe import ProbeBatch
from lightning_viz.probing import ProbeContext
from lightning_viz.render import notice

__all__ = ["Needs", "ProbeLogs", "ProbeMonitor"]

T = TypeVar("T")

# A pytorch_lightning or a lightning.pytorch Trainer and LightningModule: the monitors are written on no Lightning
# base and bound to the user's package by lightning_viz._namespace. Not imported even for type checking, which
# LightningCLI's argument parser (jsonargparse) executes to resolve annotations.
Trainer = Any
LightningModule = Any

LayerSpec = str | nn.Module


@dataclass
class ProbeLogs:
    """What one probe logs, keyed by tag: images as (H, W, 3) uint8 arrays or as functions that render them (called
    on the writer thread, so they must hold copies, never tensors training will change), scalars and markdown text.
    """

    images: dict[str, Image] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)

    def update(self, other: ProbeLogs) -> None:
        self.images.update(other.images)
        self.scalars.update(other.scalars)
        self.texts.update(other.texts)


@dataclass(frozen=True)
class Needs:
    """What a monitor reads from the shared forward pass: layer outputs, layer inputs, and whether it takes
    gradients through it (Grad-CAM, class-score projections)."""

    layers: Sequence[str] = ()
    inputs_of: Sequence[str] = ()
    gradients: bool = False


def tensorboard_writer(trainer: Trainer, logger_class: type) -> Any | None:
    """The ``SummaryWriter`` of the first ``logger_class`` (a ``TensorBoardLogger``) among ``trainer.loggers``."""
    for logger in trainer.loggers:
        if isinstance(logger, logger_class):
            return getattr(logger, "experiment", None)
    return None


def nonfinite_message(step: int, names: list[str]) -> str:
    """The line a monitor logs when the model holds NaN or infinite values."""
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return (f"✗ step {step}: the model's weights are not finite (NaN or inf in {shown}); training has diverged, so "
            "there is nothing to draw. See diagnostics/verdicts (TrainingDiagnostics) for the first step it was "
            "seen; try a learning rate ten times smaller.")  # fmt: skip


# strategies that shard parameters across ranks: a forward pass on rank zero alone would wait for the others' shards
_SHARDED = ("FSDP", "DeepSpeed", "ModelParallel")


def refuse_sharded(strategy: object, monitor: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` when ``strategy`` shards the parameters: the monitors probe on global rank zero alone, with
    no collective call, which would hang or fail on a sharded model."""
    name = type(strategy).__name__
    if any(kind in name for kind in _SHARDED):
        raise error(
            f"{monitor} does not support {name}: it shards the parameters across ranks, and the monitors probe on "
            "rank zero alone; train with strategy='ddp' (each rank holds the whole model) while you diagnose, or "
            "remove the lightning_viz callbacks"
        )


def _output_key(output: OutputSpec) -> str | int | None:
    """``output`` as it goes into a ``state_key``: a function by its qualified name, never its identity."""
    if output is None or isinstance(output, (str, int)):
        return output
    return getattr(output, "__qualname__", type(output).__qualname__)


def _budget(value: float | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1):
        raise ValueError(f"budget must be a fraction of training time in (0, 1] or None, got {value!r}")


def _positive_or_none(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")


def _typical(runs: list[float]) -> float:
    """The median of the runs after the first once there are any: the first probe also does the run's one-time work
    (tracing receptive fields, checking the crops of unit projections), which the budget must not plan on."""
    return statistics.median(runs[1:] if len(runs) > 1 else runs)


class ProbeMonitor:
    """Base of the lightning_viz monitors: runs :meth:`compute` on a fixed probe batch at chosen steps.

    Probes run at step 0 (before any update), at each of ``early_steps``, every ``every_n_steps`` optimizer
    steps (``trainer.global_step``, so gradient accumulation does not multiply probes) and at the end of every
    ``every_n_epochs``-th epoch, and a last time when training ends; never during the sanity check, at most once
    per step, and only on global rank zero. Every probe runs in eval mode, with gradients enabled and generator
    states restored, so training continues bit for bit as without the monitor. The monitors of one trainer probe
    together: one forward pass of the probe per step for all of them, results drawn and written on a background
    thread, probes spaced to keep ``budget``.

    Args:
        probe: the probe images: a :class:`~lightning_viz.ProbeBatch`, a tensor (N, C, H, W), or None to draw
            ``probe_size`` images from the validation loader (else the train loader) when training starts.
        probe_size: number of images drawn when ``probe`` is None.
        every_n_steps: probe every this many optimizer steps; None for no step cadence.
        every_n_epochs: probe at the end of every this many training epochs; None for no epoch cadence.
        early_steps: extra probes early in training, where learning-rate trouble shows; None: the monitor's
            ``default_early_steps`` (5, 10, 25 and 50 for :class:`~lightning_viz.TrainingDiagnostics`, whose
            learning-rate verdict needs them; none for the pictures, which change little before step 100 and
            cost the most to draw).
        layers: layers to probe, by dotted name or module; None lets the monitor choose.
        on_error: ``"warn"``: a failing probe warns once per distinct error and training continues;
            ``"raise"``: the error stops training. Configuration errors raise at setup either way.
        seed: selects the probe images when they are drawn.
        output: where the logits are in what the model's ``forward`` returns: None (the result is the (N, K)
            logits), a key (``"logits"``: a dict's item or an attribute), an index (a tuple's item) or a function of
            the result. One logit per image (N, 1) is read as a binary classifier. Checked once at setup.
        network: the submodule to call as the model, for a ``LightningModule`` whose steps call it (``"net"``) and
            that has no ``forward``; layer names stay relative to the ``LightningModule``.
        budget: the share of training time all the monitors of the trainer may take together (0.05: 5 %); they
            measure their cost and space their probes (doubling the cadence) to keep it, logging what they skipped
            as ``viz/budget/*``; None for no limit. The smallest of the monitors' budgets applies (None only when
            all are None). Step 0, the early steps and the final probe's regular parts always run.

    Raises:
        ValueError: for an argument out of range.
    """

    def __init__(
        self,
        probe: ProbeBatch | Tensor | None = None,
        probe_size: int = 16,
        every_n_steps: int | None = 100,
        every_n_epochs: int | None = None,
        early_steps: Sequence[int] | None = None,
        layers: LayerSpec | Sequence[LayerSpec] | None = None,
        on_error: Literal["warn", "raise"] = "warn",
        seed: int = 0,
        output: OutputSpec = None,
        network: str | None = None,
        budget: float | None = 0.05,
    ) -> None:
        super().__init__()
        _budget(budget)
        if output is not None and not isinstance(output, (str, int)) and not callable(output):
            raise TypeError(f"output must be None, a key, an index or a function of the model's output, got {output!r}")
        if network is not None and not isinstance(network, str):
            raise TypeError(f"network must be the dotted name of a submodule or None, got {network!r}")
        if isinstance(probe, Tensor):
            probe = ProbeBatch(probe)
        if probe is not None and not isinstance(probe, ProbeBatch):
            raise TypeError(f"probe must be a ProbeBatch, an image tensor or None, got {type(probe).__name__}")
        if not isinstance(probe_size, int) or isinstance(probe_size, bool) or probe_size <= 0:
            raise ValueError(f"probe_size must be a positive int, got {probe_size!r}")
        _positive_or_none("every_n_steps", every_n_steps)
        _positive_or_none("every_n_epochs", every_n_epochs)
        if early_steps is None:
            early_steps = self.default_early_steps
        if any(not isinstance(s, int) or s < 0 for s in early_steps):
            raise ValueError(f"early_steps must be non-negative ints, got {early_steps!r}")
        if on_error not in ("warn", "raise"):
            raise ValueError(f"on_error must be 'warn' or 'raise', got {on_error!r}")
        if isinstance(layers, (str, nn.Module)):
            layers = [layers]
        if layers is not None and (not layers or not all(isinstance(x, (str, nn.Module)) for x in layers)):
            raise ValueError(f"layers must be None, a layer name or module, or a non-empty list, got {layers!r}")
        self.probe = probe
        self.probe_size = probe_size
        self.every_n_steps = every_n_steps
        self.every_n_epochs = every_n_epochs
        self.early_steps = frozenset(early_steps)
        self.layers = None if layers is None else list(layers)
        self.on_error = on_error
        self.seed = seed
        self.output = output
        self.network = network
        self.budget = budget
        self.layer_names: list[str] = []
        self.tag_suffix = ""  # set by the session when two monitors of one class would write the same tags
        self._last_step: int | None = None
        self._warned: set[str] = set()
        self._drawn_tags: dict[str, None] = {}  # image tags drawn so far, in order (a set that keeps it)
        self._noticed = False  # the divergence notice was drawn in place of the pictures
        self._writer: Any | None = None
        self._session: ProbeSession | None = None
        self._costs: dict[str, list[float]] = {}  # seconds per run of each part, the last few
        self._module_names: dict[int, str] = {}  # layers given as modules, by their names in the model

    # -- what a subclass provides ------------------------------------------------------------------------------

    namespace = "viz"
    """The first part of this monitor's TensorBoard tags (``gradcam``, ``deconvnet``, ...)."""

    default_early_steps: tuple[int, ...] = ()
    """The early probes of a monitor built with ``early_steps=None``."""

    def default_layers(self, model: nn.Module, images: Tensor) -> list[str]:
        """Layers to probe when the user gives none. ``images`` is the probe batch, on the model's device."""
        raise NotImplementedError

    def needs(self) -> Needs:
        """What the shared forward pass must capture for :meth:`compute` (by default: the outputs of
        ``layer_names``)."""
        return Needs(layers=self.layer_names)

    def compute(self, context: ProbeContext, step: int) -> ProbeLogs:
        """One probe, from the step's shared :class:`~lightning_viz.probing.ProbeContext` (called inside
        :func:`~lightning_viz.methods.isolated`; ``context.model`` returns logits, ``context.probe`` is on its
        device)."""
        raise NotImplementedError

    def expensive_parts(self) -> dict[str, int]:
        """Parts with a rarer cadence of their own (name -> every so many steps), run by :meth:`compute_part`."""
        return {}

    def compute_part(self, name: str, context: ProbeContext, step: int) -> ProbeLogs:
        """One of :meth:`expensive_parts`."""
        raise NotImplementedError

    def part_passes(self, name: str) -> float:
        """A prior for the cost of one of :meth:`expensive_parts`, in forward passes of the probe batch (a backward
        pass counts two), which the budget uses until the part has run once."""
        return 1.0

    def compute_nonfinite(self, model: nn.Module, step: int, nonfinite: list[str]) -> ProbeLogs:
        """What a probe logs instead of its panels when the model holds NaN or infinite values: a line saying so
        under ``<namespace>/status`` (a diverged run has nothing to explain)."""
        return ProbeLogs(texts={f"{self.namespace}/status": nonfinite_message(step, nonfinite)})

    def custom_scalars(self) -> dict[str, Any]:
        """Groups of TensorBoard's Custom Scalars layout this monitor contributes (written once per fit)."""
        return {}

    @property
    def label(self) -> str:
        """This monitor's name in the ``viz/*`` tags: its class, with the suffix that tells two instances apart."""
        return type(self).__name__ + self.tag_suffix

    def cost(self, part: str = "regular") -> float | None:
        """The median measured seconds of a part over its last runs (for the regular part, with the CPU time that
        drawing and writing its results took on the writer thread); None before it ran, and for the regular part
        until it ran twice (the first probe also traces the network: assumed to fit until measured again)."""
        runs = self._costs.get(part)
        if not runs or (part == "regular" and len(runs) == 1):  # the first probe's cost includes one-time work
            return None
        drawn = self._costs.get("render") if part == "regular" else None
        return _typical(runs) + (_typical(drawn) if drawn else 0.0)

    # -- Lightning hooks ---------------------------------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        """The options that define what this monitor logs; two monitors of one class must differ in one of them.
        Subclasses add theirs."""
        layers = None if self.layers is None else [self._layer_key(x) for x in self.layers]
        return {
            "layers": layers,
            "every_n_steps": self.every_n_steps,
            "every_n_epochs": self.every_n_epochs,
            "early_steps": sorted(self.early_steps),
            "probe_size": self.probe_size,
            "seed": self.seed,
            **({} if self.output is None else {"output": _output_key(self.output)}),
            **({} if self.network is None else {"network": self.network}),
        }

    def _layer_key(self, layer: LayerSpec | None) -> str | None:
        """A layer option as it goes into ``_options``: its name (a module's name in the model, known from setup;
        never its identity, which changes from run to run, so a resumed run would find no state under the key)."""
        if layer is None or isinstance(layer, str):
            return layer
        return self._module_names.get(id(layer), type(layer).__name__)

    def _layer_specs(self) -> list[LayerSpec | None]:
        """Every layer option of this monitor (subclasses add theirs)."""
        return list(self.layers or [])

    @property
    def state_key(self) -> str:
        """Lightning's key for this callback's state in a checkpoint (``Callback._generate_state_key``'s format)."""
        return f"{type(self).__qualname__}{self._options()!r}"

    _lightning: Namespace | None = None
    """The Lightning package this class is a callback of (set by :func:`lightning_viz._namespace.bind`)."""

    def _ns(self) -> Namespace:
        if self._lightning is None:
            raise TypeError(
                f"{type(self).__name__} from lightning_viz.callbacks is not a Lightning callback: import it from "
                "lightning_viz (or lightning_viz.lightning / lightning_viz.pytorch_lightning)"
            )
        return self._lightning

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        ns = self._ns()
        if not isinstance(trainer, ns.Trainer):
            other = "lightning.pytorch" if type(trainer).__module__.startswith("lightning.") else "pytorch_lightning"
            raise ns.MisconfigurationException(
                f"{type(self).__name__} is a {ns.name} callback, but the Trainer is a {other} one: import the monitors "
                f"from {PACKAGES[other]} (or import {other} before `from lightning_viz import ...`)"
            )
        self._writer = tensorboard_writer(trainer, ns.TensorBoardLogger)
        self._session = session_for(trainer)
        for layer in self._layer_specs():
            if isinstance(layer, nn.Module):
                self._module_names[id(layer)] = resolve_layer(pl_module, layer)[0]  # fails fast, with close matches
        if trainer.is_global_zero:
            self._session.attach_writer(self._writer)
        if stage != "fit":
            monitors = [c for c in trainer.callbacks if isinstance(c, ProbeMonitor)]
            if monitors and monitors[0] is self:  # said once for all the monitors attached
                names = ", ".join(sorted({type(c).__name__ for c in monitors}))
                stage = getattr(stage, "value", stage)  # a TrainerFn: "validate", "test", "predict"
                warnings.warn(f"{names} probe during fit only: trainer.{stage} logs nothing from them (a callback "
                              "of yours may call probe_now from its hooks)", UserWarning, stacklevel=2)  # fmt: skip
            return
        refuse_sharded(trainer.strategy, type(self).__name__, ns.MisconfigurationException)
        if self._writer is None and not getattr(trainer, "fast_dev_run", False):
            raise ns.MisconfigurationException(
                f"{type(self).__name__} logs to TensorBoard, but trainer.loggers has no TensorBoardLogger "
                f"(found {[type(x).__name__ for x in trainer.loggers] or 'none'}): "
                "pass Trainer(logger=TensorBoardLogger(...))"
            )

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # after configure_model, on every rank, so a configuration error stops all ranks alike
        if not conv_layer_names(pl_module):
            raise self._ns().MisconfigurationException(
                f"{type(self).__name__}: {type(pl_module).__name__} has no nn.Conv2d layer; lightning_viz "
                "visualizes convolutional networks"
            )
        if self.layers is not None:
            self.layer_names = [resolve_layer(pl_module, layer)[0] for layer in self.layers]

    def _last_monitor(self) -> bool:
        """Whether this is the last monitor of the session: the probe step runs after every monitor's hook has
        seen the batch (TrainingDiagnostics reads the batch's loss in its own)."""
        return self._session is not None and self._session.monitors[-1] is self

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        session = self._get_session(trainer)
        session.start(trainer, pl_module)  # on every rank, so a configuration error stops all ranks alike
        if self._last_monitor() and trainer.global_step == 0 and self._probing(trainer):
            session.probe(trainer, pl_module, session.due(0), 0)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._last_monitor() and self._probing(trainer):
            session = self._get_session(trainer)
            step = trainer.global_step
            # at the fit's last step this is the final probe: one probe step (one forward pass), its scalars logged once
            session.probe(trainer, pl_module, session.due(step, final=session.is_last(step)), step)

    def is_probe_step(self, step: int) -> bool:
        """Whether this monitor's own cadence probes at optimizer step ``step`` (before the budget spaces it)."""
        return step in self.early_steps or (self.every_n_steps is not None and step % self.every_n_steps == 0)

    def _early_only(self, step: int) -> bool:
        """Whether ``step`` is an early probe and nothing more (not step 0, the regular cadence or the final probe):
        a monitor may leave out there what only the regular probes need."""
        regular = self.every_n_steps is not None and step % self.every_n_steps == 0
        final = self._session is not None and self._session.is_last(step)
        return step in self.early_steps and step != 0 and not regular and not final

    def part_step(self, step: int) -> bool:
        """Whether an expensive part's own cadence falls on optimizer step ``step`` (before the budget spaces it)."""
        return any(step % every == 0 for every in self.expensive_parts().values())

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The epoch cadence: the last monitor runs every monitor due at this epoch's end in one probe step."""
        if self._last_monitor() and self._probing(trainer):
            session = self._get_session(trainer)
            step = trainer.global_step
            session.probe(trainer, pl_module, session.due_at_epoch_end(step, trainer.current_epoch), step)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """A final probe of every monitor (expensive parts included) unless it already probed this step."""
        if self._last_monitor() and self._probing(trainer):
            session = self._get_session(trainer)
            step = trainer.global_step
            session.probe(trainer, pl_module, session.due(step, final=True), step)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._session is not None:
            self._session.finish()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if self._session is not None:
            self._session.finish()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        session = self._session
        if session is not None and session.monitors[-1] is self:
            session.close()
            forget_session(trainer)
        self._session = None

    def _probing(self, trainer: Trainer) -> bool:
        return not trainer.sanity_checking and trainer.is_global_zero

    def _get_session(self, trainer: Trainer) -> ProbeSession:
        if self._session is None:
            self._session = session_for(trainer)
        return self._session

    def state_dict(self) -> dict[str, Any]:
        # the probe's tensors are the ones every monitor of the session holds, so a checkpoint stores them once
        return {
            "probe": None if self.probe is None else self.probe.state_dict(),
            "last_step": self._last_step,
            "costs": {part: list(runs) for part, runs in self._costs.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("probe") is not None:
            self.probe = ProbeBatch.from_state_dict(state_dict["probe"])
        self._last_step = state_dict.get("last_step")
        self._costs = {part: list(runs) for part, runs in state_dict.get("costs", {}).items()}

    # -- probing -----------------------------------------------------------------------------------------------

    def _prepare(self, trainer: Trainer, pl_module: LightningModule, session: ProbeSession) -> None:
        """Draw the probe (shared with the monitors that draw the same), check the model, choose the layers."""
        if self.probe is None:
            key = (self.probe_size, self.seed)
            if key not in session.drawn:
                session.drawn[key] = ProbeBatch.from_dataloader(self._probe_loader(trainer), self.probe_size, self.seed)
            self.probe = session.drawn[key]
        self.probe = session.shared_probe(self.probe)
        if self._group_key() not in session.checked:
            self._check_model(pl_module)
            session.checked.add(self._group_key())
        if self.layer_names:
            return
        if self.layers is not None:
            self.layer_names = [resolve_layer(pl_module, layer)[0] for layer in self.layers]
        else:
            with isolated(pl_module), self._classifier(pl_module):
                self.layer_names = self.default_layers(pl_module, self._probe_on(pl_module).images)

    def _shared_setup(self, name: str, compute: Callable[[], T]) -> T:
        """``compute()`` once for all the monitors of the session that probe the same images (default layers)."""
        if self._session is None:
            return compute()
        key = (name, self._group_key())
        if key not in self._session.memo:
            self._session.memo[key] = compute()
        return self._session.memo[key]  # type: ignore[no-any-return]

    def _group_key(self) -> tuple[int, Any, Any]:
        """Monitors with equal keys share the step's forward pass: the same probe, the same view of the model."""
        return id(self.probe), _output_key(self.output), self.network

    def _network(self, pl_module: nn.Module) -> nn.Module | None:
        return None if self.network is None else resolve_layer(pl_module, self.network)[1]

    @contextmanager
    def _classifier(self, pl_module: nn.Module) -> Iterator[None]:
        """While probing, ``pl_module(x)`` returns (N, K) logits (see ``output`` and ``network``)."""
        with as_classifier(pl_module, self.output, self._network(pl_module)):
            yield

    def _check_model(self, pl_module: nn.Module) -> None:
        """Once, before the first probe: the model takes the probe and returns class scores, or a message that
        says what it got and what to pass."""
        error = self._ns().MisconfigurationException
        probe = self._probe_on(pl_module)
        images, name = probe.images, type(self).__name__
        assert self.probe is not None
        where = (f"the probe batch (images of shape {tuple(images.shape)}, {str(self.probe.images.dtype)[6:]}, drawn "
                 "from the validation loader, else the train loader, unless given as probe=)")  # fmt: skip
        raw: list[Any] = []  # what forward returned, for the message

        def remember(output: Any) -> Any:
            raw.append(output)
            return select_logits(output, self.output)

        network = self._network(pl_module)
        with isolated(pl_module), torch.no_grad():
            try:
                with as_classifier(pl_module, remember, network):
                    logits = pl_module(images.clone())
            except NotImplementedError as problem:
                if 'missing the required "forward" function' not in str(problem):
                    raise error(f"{name}: the model fails on {where}: NotImplementedError: {problem}") from problem
                message = (f"{name}: {type(pl_module).__name__} has no forward ({problem}); pass network='<the "
                           "submodule its steps call>', for example network='net', or define forward")  # fmt: skip
                raise error(message) from problem
            except Exception as problem:
                message = (f"{name}: the model fails on {where}: {type(problem).__name__}: {problem}; pass "
                           "probe= with images the model takes, or output= if it does not return logits")  # fmt: skip
                raise error(message) from problem
            ok = isinstance(logits, Tensor) and logits.dim() == 2 and logits.shape[0] == len(images)
            if not (ok and logits.is_floating_point() and logits.shape[1] >= 2):
                got = describe_output(raw[0] if raw else logits)
                fix = f"pass {suggest_output(raw[0] if raw else logits)}" if self.output is None else "check output="
                picked = "" if self.output is None else f" (output={self.output!r} picks {describe_output(logits)})"
                raise error(f"{name}: the model returns {got}{picked} for {where}; the monitors need class scores "
                            f"of shape ({len(images)}, K): {fix}")  # fmt: skip
            if not self.probe.images.is_floating_point():  # the probes run on float copies: gradients need them
                try:
                    with as_classifier(pl_module, self.output, network):
                        as_given = pl_module(self.probe.images.to(images.device))
                except Exception:
                    as_given = None  # the model does not take the loader's dtype itself: nothing to compare
                if isinstance(as_given, Tensor) and not torch.allclose(as_given.float(), logits.float(), atol=1e-4):
                    raise error(f"{name}: the model's output depends on the dtype of {where}: the probes run on "
                                "float copies with the same values (0-255), which gradients need; convert the "
                                "images to float in the loader or the model's first line (x = x.float() / 255), "
                                "or pass probe=ProbeBatch(float images)")  # fmt: skip

    def probe_now(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Probe at the current ``global_step`` (once per step), from any hook, validation hooks included."""
        step = trainer.global_step
        if not self._probing(trainer) or step == self._last_step:
            return
        session = self._get_session(trainer)
        session.start(trainer, pl_module)
        session.probe(trainer, pl_module, [_Due(self, regular=True)], step)

    def _run(
        self,
        model: nn.Module,
        context: ProbeContext | None,
        regular: bool,
        parts: Sequence[str],
        step: int,
        nonfinite: list[str],
        shared_seconds: float = 0.0,
    ) -> None:
        """Compute what is due from the step's context and queue it for the writer; a failure warns once."""
        self._last_step = step
        logs = ProbeLogs()
        try:
            if context is None:  # non-finite weights: one status line, no expensive part
                if not regular:
                    return
                logs = self.compute_nonfinite(model, step, nonfinite)
                if not self._noticed:  # each picture's last card says why the pictures stop
                    self._noticed = True
                    card = notice(f"✗ diverged by step {step}", nonfinite_message(step, nonfinite)[2:])
                    logs.images.update({tag: card for tag in self._drawn_tags if tag not in logs.images})
            else:
                if regular:
                    start = time.perf_counter()
                    logs.update(self.compute(context, step))
                    self._record("regular", time.perf_counter() - start + shared_seconds)
                    logs.scalars[f"viz/overhead_ms/{self.label}"] = 1000 * (
                        time.perf_counter() - start + shared_seconds
                    )
                for name in parts:
                    start = time.perf_counter()
                    logs.update(self.compute_part(name, context, step))
                    self._record(name, time.perf_counter() - start)
                    logs.scalars[f"viz/overhead_ms/{self.label}/{name}"] = 1000 * (time.perf_counter() - start)
        except Exception as error:
            self._failed(error, step)
            return
        self._drawn_tags.update(dict.fromkeys(logs.images))
        session = self._session
        if self._writer is None or session is None or session.writer is None:  # fast_dev_run: nothing to log to
            return
        suffix = self.tag_suffix
        written = Written(
            step,
            images={_tagged(tag, suffix): image for tag, image in logs.images.items()},
            scalars={_tagged(tag, suffix) if not tag.startswith("viz/") else tag: v for tag, v in logs.scalars.items()},
            texts={_tagged(tag, suffix): text for tag, text in logs.texts.items()},
            timing=(f"viz/render_ms/{self.label}" + ("" if regular else "/parts")) if logs.images else None,
            done=(lambda seconds: self._record("render", seconds)) if regular else None,
        )
        try:
            session.writer.submit(written)
        except RuntimeError as error:
            self._failed(error, step, "writing to TensorBoard")

    def _record(self, part: str, seconds: float) -> None:
        runs = self._costs.setdefault(part, [])
        runs.append(seconds)
        del runs[1:-5]  # the first run and the last five

    def _failed(self, error: BaseException, step: int | None, what: str = "probe") -> None:
        """A failed probe (or write) warns once per distinct error and training continues; with
        ``on_error="raise"`` it stops training."""
        if self.on_error == "raise":
            raise error
        message = f"{type(error).__name__}: {error}"
        if message not in self._warned:
            self._warned.add(message)
            at = "" if step is None else f" at step {step}"
            warnings.warn(
                f"{type(self).__name__} {what}{at} failed ({message}); training continues and later probes are still "
                "tried. Pass on_error='raise' to stop on it.",
                stacklevel=2,
            )

    def _probe_on(self, pl_module: nn.Module) -> ProbeBatch:
        assert self.probe is not None
        param = next((p for p in pl_module.parameters() if p.is_floating_point()), None)
        device = param.device if param is not None else torch.device("cpu")
        probe = self.probe.to(device, None if param is None else param.dtype)
        # a copy, so a forward pass that normalises its input in place cannot change the probe (or the user's tensor)
        return replace(probe, images=probe.images.clone())

    def _probe_loader(self, trainer: Trainer) -> Any:
        loaders = trainer.val_dataloaders
        if isinstance(loaders, (list, tuple)):
            loaders = loaders[0] if loaders else None
        if loaders is None:
            loaders = trainer.train_dataloader
            if isinstance(loaders, (list, tuple)):
                loaders = loaders[0]
        if loaders is None:
            raise self._ns().MisconfigurationException("no validation or training loader to draw the probe batch from")
        return loaders


def _tagged(tag: str, suffix: str) -> str:
    """``tag`` with ``suffix`` after its first part: ``deconvnet/conv1`` -> ``deconvnet_rule-guided/conv1``."""
    if not suffix:
        return tag
    head, _, rest = tag.partition("/")
    return f"{head}{suffix}/{rest}" if rest else f"{head}{suffix}"
