"""The base every lightning_viz monitor shares: its options, what it needs, what it computes, its parts and its
state. Its Lightning hooks hand over to the trainer's suite (:mod:`lightning_viz.callbacks._suite`), which runs the
probe steps of all the monitors together.

A custom monitor subclasses the bound base (``lightning_viz.pytorch_lightning.ProbeMonitor`` or
``lightning_viz.lightning.ProbeMonitor``) and overrides two methods::

    from lightning_viz.callbacks import Needs, ProbeLogs
    from lightning_viz.pytorch_lightning import ProbeMonitor

    class MeanActivation(ProbeMonitor):
        def needs(self) -> Needs:  # what the step's one forward pass must capture for it
            return Needs(layers=self.layer_names)  # (the default: its layers' outputs)

        def compute(self, context, step) -> ProbeLogs:  # what it logs, read from the shared context
            return ProbeLogs(scalars={f"mean_activation/{name}": float(context.activation(name).mean())
                                      for name in self.layer_names})

    trainer = Trainer(logger=TensorBoardLogger("runs"), callbacks=[MeanActivation()])

With ``layers=None`` it probes each convolutional stage's output (override :meth:`ProbeMonitor.default_layers` to
choose others); the suite gives it the cadence, the budget, rank zero, the isolation and the writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from torch import Tensor, nn

from lightning_viz._checks import check_int
from lightning_viz._namespace import Namespace
from lightning_viz.callbacks._interface import Needs, Part, ProbeLogs
from lightning_viz.callbacks._suite import ProbeSuite, nonfinite_message, suite_for
from lightning_viz.methods import OutputSpec, conv_layer_names, resolve_layer, stage_layers
from lightning_viz.probe import ProbeBatch
from lightning_viz.probing import ProbeContext

__all__ = ["LayerSpec", "Needs", "Part", "ProbeLogs", "ProbeMonitor", "nonfinite_message"]

# A pytorch_lightning or a lightning.pytorch Trainer and LightningModule: the monitors are written on no Lightning
# base and bound to the user's package by lightning_viz._namespace. Not imported even for type checking, which
# LightningCLI's argument parser (jsonargparse) executes to resolve annotations.
Trainer = Any
LightningModule = Any

LayerSpec = str | nn.Module


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
        budget: the share of the fit's training time all the monitors of the trainer may take together (0.05: 5 %),
            everything they do counted; they space their probes to keep it, and say what they skipped and what they
            spent as ``viz/budget/*``. Step 0, the early steps and the final probe always run, so a fit too short to
            pay for them overspends and says so. None: every cadence as given, whatever it costs. The smallest of
            the monitors' budgets applies (None only when all are None).
        max_image_bytes: the most bytes of pictures the monitors of the trainer write in one fit, together (the
            smallest of theirs applies): past it, pictures stop except the final probe's (kept in reserve) and
            ``viz/images`` says so; scalars and verdicts go on. Pictures are kept on a cadence that thins as the run
            goes on (every probe for the first 2,000 steps at ``every_n_steps=100``, then half as often at each
            doubling: about 110 sets in a million steps, ~150 MB with the example's suite), so the default 1 GB
            is a bound a run reaches only with many more or larger pictures. None: no bound.

    Raises:
        ValueError: for an argument out of range.
    """

    namespace = "viz"
    """The first part of this monitor's TensorBoard tags (``gradcam``, ``deconvnet``, ...)."""

    default_early_steps: tuple[int, ...] = ()
    """The early probes of a monitor built with ``early_steps=None``."""

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
        max_image_bytes: int | None = 10**9,
    ) -> None:
        super().__init__()
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or
                                   not 0 < budget <= 1):  # fmt: skip
            raise ValueError(f"budget must be a fraction of training time in (0, 1] or None, got {budget!r}")
        if output is not None and not isinstance(output, (str, int)) and not callable(output):
            raise TypeError(f"output must be None, a key, an index or a function of the model's output, got {output!r}")
        if network is not None and not isinstance(network, str):
            raise TypeError(f"network must be the dotted name of a submodule or None, got {network!r}")
        if isinstance(probe, Tensor):
            probe = ProbeBatch(probe)
        if probe is not None and not isinstance(probe, ProbeBatch):
            raise TypeError(f"probe must be a ProbeBatch, an image tensor or None, got {type(probe).__name__}")
        check_int("probe_size", probe_size)
        check_int("max_image_bytes", max_image_bytes, none=True)
        check_int("every_n_steps", every_n_steps, none=True)
        check_int("every_n_epochs", every_n_epochs, none=True)
        early_steps = self.default_early_steps if early_steps is None else early_steps
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in early_steps):
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
        self.max_image_bytes = max_image_bytes
        self.layer_names: list[str] = []  # the layers probed, by name (chosen at fit start)
        self.tag_suffix = ""  # set by the suite when two monitors of one class would write the same tags
        self.last_step: int | None = None  # the step of the last probe
        self._module_names: dict[int, str] = {}  # layers given as modules, by their names in the model
        self._state_key: str | None = None  # built once the layer options are named (see state_key)
        self._suite: ProbeSuite | None = None

    # -- what a monitor provides --------------------------------------------------------------------------------

    def needs(self) -> Needs:
        """What the shared forward pass must capture for :meth:`compute` (by default: the outputs of
        ``layer_names``)."""
        return Needs(layers=self.layer_names)

    def compute(self, context: ProbeContext, step: int) -> ProbeLogs:
        """One regular probe, from the step's shared :class:`~lightning_viz.probing.ProbeContext` (inside the
        isolation; ``context.model`` returns logits, ``context.probe`` is on its device)."""
        raise NotImplementedError

    def default_layers(self, model: nn.Module, images: Tensor) -> list[str]:
        """Layers to probe when the user gives none (by default: each convolutional stage's output, up to five).
        ``images`` is the probe batch, on the model's device."""
        return stage_layers(model, images)

    def parts(self) -> list[Part]:
        """The expensive parts, each with its own cadence and cost prior (none by default)."""
        return []

    def compute_nonfinite(self, model: nn.Module, step: int, nonfinite: list[str]) -> ProbeLogs:
        """What a probe logs instead of its panels when the model holds NaN or infinite values: a line saying so
        under ``<namespace>/status`` (a diverged run has nothing to explain)."""
        return ProbeLogs(texts={f"{self.namespace}/status": nonfinite_message(step, nonfinite)})

    def custom_scalars(self) -> dict[str, Any]:
        """Groups of TensorBoard's Custom Scalars layout this monitor contributes (written once per fit)."""
        return {}

    def fit_start(self, model: nn.Module) -> None:
        """At fit start, on every rank: check what only the model can tell (a layer option that names no layer)."""

    def train_start(self, model: nn.Module) -> None:
        """When training starts, before step 0's probe (the initial weights a monitor compares with)."""

    def observe_batch(self, step: int, outputs: Any) -> None:
        """Every training batch's output (``training_step``'s), at the ``step`` it was computed at."""

    def before_update(self, model: nn.Module, step: int) -> None:
        """Before the optimizer step that completes ``step``, where ``step`` is on this monitor's cadence."""

    def observe_rates(self, step: int, rates: dict[str, float]) -> None:
        """Before every optimizer step: the learning rate of each parameter group that the update of the batch at
        ``step`` uses (:func:`~lightning_viz.callbacks._suite.optimizer_rates` names them)."""

    def keep_batch(self, batch: Any) -> None:
        """Every training batch, after its step (on rank zero): a monitor that experiments keeps what it needs."""

    def after_probe(self, model: nn.Module, optimizers: Sequence[Any], step: int) -> None:
        """After this monitor's probe at ``step`` during training (rank zero), with the model in training and the run's
        optimizers: a monitor that experiments keeps the state it would start from."""

    def experiment_ready(self, step_seconds: float, at_end: bool) -> tuple[float, bool] | None:
        """The experiment this monitor has ready, as (its expected seconds, whether it is urgent: run at once
        whatever the budget), or None; ``at_end``: the fit ends here (an experiment that could run with less than it
        wanted, or that the budget never afforded, says so now or never)."""
        return None

    def experiment(self, model: nn.Module, optimizers: Sequence[Any], step: int, over_budget: bool,
                   at_end: bool) -> ProbeLogs:  # fmt: skip
        """Run the ready experiment (off the probe steps: the model in training, the run's optimizers; it must leave
        them as they were) and return what to log. ``over_budget``: it runs although the budget could not afford it
        (it is urgent, or the fit ends)."""
        return ProbeLogs()

    check_every_n_steps: int | None = None
    """The cadence of :meth:`check` in optimizer steps (None: no checks)."""

    rates_logged = False
    """Set by the suite where Lightning's LearningRateMonitor already logs the rates."""

    def check(self, step: int) -> ProbeLogs:
        """A cheap check every ``check_every_n_steps`` between probes, from what :meth:`observe_batch` and
        :meth:`observe_rates` gathered: no forward pass and no picture (scalars and texts only)."""
        return ProbeLogs()

    # -- identity and state ---------------------------------------------------------------------------------------

    @property
    def label(self) -> str:
        """This monitor's name in the ``viz/*`` tags: its class, with the suffix that tells two instances apart."""
        return type(self).__name__ + self.tag_suffix

    def options(self) -> dict[str, Any]:
        """The options that define what this monitor logs; two monitors of one class must differ in one of them.
        Subclasses add theirs."""
        return {
            "layers": None if self.layers is None else [self.layer_key(x) for x in self.layers],
            "every_n_steps": self.every_n_steps,
            "every_n_epochs": self.every_n_epochs,
            "early_steps": sorted(self.early_steps),
            "probe_size": self.probe_size,
            "seed": self.seed,
            **({} if self.output is None else {"output": getattr(self.output, "__qualname__", self.output)}),
            **({} if self.network is None else {"network": self.network}),
        }

    def layer_options(self) -> list[LayerSpec | None]:
        """Every layer option of this monitor (subclasses add theirs): checked at setup."""
        return list(self.layers or [])

    def layer_key(self, layer: LayerSpec | None) -> str | None:
        """A layer option as it goes into :meth:`options`: its name (a module's name in the model, known from
        setup; never its identity, which changes from run to run, so a resumed run would find no state under it)."""
        if layer is None or isinstance(layer, str):
            return layer
        return self._module_names.get(id(layer), type(layer).__name__)

    @property
    def state_key(self) -> str:
        """Lightning's key for this callback's state in a checkpoint (``Callback._generate_state_key``'s format).
        Lightning reads it at every hook call: it is built once the layer options have their names (at setup)."""
        if self._state_key is not None:
            return self._state_key
        key = f"{type(self).__qualname__}{self.options()!r}"
        if self.layer_names:  # named at fit start: the options no longer change
            self._state_key = key
        return key

    def state_dict(self) -> dict[str, Any]:
        # the probe's tensors are the ones every monitor of the suite holds, so a checkpoint stores them once
        return {"probe": None if self.probe is None else self.probe.state_dict(), "last_step": self.last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("probe") is not None:
            self.probe = ProbeBatch.from_state_dict(state_dict["probe"])
        self.last_step = state_dict.get("last_step")

    _lightning: Namespace | None = None
    """The Lightning package this class is a callback of (set by :func:`lightning_viz._namespace.bind`)."""

    def lightning(self) -> Namespace:
        """The classes of the Lightning package this monitor is a callback of."""
        if self._lightning is None:
            raise TypeError(
                f"{type(self).__name__} from lightning_viz.callbacks is not a Lightning callback: import it from "
                "lightning_viz (or lightning_viz.lightning / lightning_viz.pytorch_lightning)"
            )
        return self._lightning

    def misconfiguration(self) -> type[Exception]:
        """The exception a configuration error raises (Lightning's ``MisconfigurationException``)."""
        return self.lightning().MisconfigurationException  # type: ignore[no-any-return]

    # -- Lightning hooks: each hands over to the suite --------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._suite = suite_for(trainer, [c for c in trainer.callbacks if isinstance(c, ProbeMonitor)])
        self._suite.setup(self, trainer, pl_module, stage)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.suite.fit_start(self, pl_module)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.suite.train_start(trainer, pl_module)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.suite.batch_start(trainer, batch_idx)

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        self.suite.before_optimizer_step(trainer, pl_module)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        self.suite.batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.suite.epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.suite.train_end(trainer, pl_module)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.suite.finish()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if self._suite is not None:
            self._suite.finish()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._suite is not None:
            self._suite.close()
        self._suite = None

    def probe_now(self, trainer: Trainer, pl_module: LightningModule, parts: bool = False) -> None:
        """Probe at the current ``global_step`` (once per step), from any hook, validation hooks included; with
        ``parts``, the expensive parts too (activation maximisation, the randomisation check, ...)."""
        self.suite.probe_now(self, trainer, pl_module, parts)

    @property
    def suite(self) -> ProbeSuite:
        """The suite of the trainer this monitor is attached to (from ``setup`` to ``teardown``)."""
        if self._suite is None:
            raise RuntimeError(f"{type(self).__name__} is not attached to a trainer (its setup has not run)")
        return self._suite

    def name_layer_options(self, model: nn.Module) -> None:
        """Name each layer option given as a module (fails fast, with close matches)."""
        for layer in self.layer_options():
            if isinstance(layer, nn.Module):
                self._module_names[id(layer)] = resolve_layer(model, layer)[0]

    def resolve_layers(self, model: nn.Module) -> None:
        """At fit start (after ``configure_model``): the model has a convolution, and every layer option names a
        layer (fails fast, with close matches)."""
        if not conv_layer_names(model):
            raise self.misconfiguration()(
                f"{type(self).__name__}: {type(model).__name__} has no nn.Conv2d layer; lightning_viz "
                "visualizes convolutional networks"
            )
        for layer in self.layer_options():
            if layer is not None:
                resolve_layer(model, layer)
        if self.layers is not None:
            self.layer_names = [resolve_layer(model, layer)[0] for layer in self.layers]
