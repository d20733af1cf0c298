"""One probe step's shared work: one forward pass of the probe batch, and what several monitors read from it.

The forward pass runs once, with hooks on the union of the layers the monitors asked for, and records its graph
with every ReLU under a :class:`~lightning_viz.methods.RuleSwitch`. From that graph each method takes a partial
backward pass under its own rule: Grad-CAM maps per (layer, class) under the plain gradient, class-score
projections to the pixels under the deconvnet or guided rule. Top-k unit rankings and deconvnet projections of
single units are cached too, so two monitors that show or measure the same thing compute it once.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor, nn

from lightning_viz.methods import (
    Rule,
    RuleSwitch,
    TopUnits,
    cam_from,
    capture_outputs,
    project_units,
    resolve_layer,
    switchable_relu,
    top_k_units,
)
from lightning_viz.methods.unit_crops import CropGrid, crop_grid, project_units_cropped
from lightning_viz.probe import ProbeBatch

__all__ = ["ProbeContext", "Target"]

Target = Literal["predicted", "true", "least"]
"""Which class a map explains: each image's predicted class, its true class, or its least likely class."""

T = TypeVar("T")


@contextmanager
def _capture_inputs(layers: dict[str, nn.Module]) -> Iterator[dict[str, Tensor]]:
    """The first positional input of each named layer, detached, as the forward pass sees it."""
    inputs: dict[str, Tensor] = {}
    with ExitStack() as stack:
        for name, module in layers.items():

            def hook(module: nn.Module, args: Any, name: str = name) -> None:
                if args and isinstance(args[0], Tensor):
                    inputs[name] = args[0].detach()

            stack.callback(module.register_forward_pre_hook(hook).remove)
        yield inputs


class ProbeContext:
    """The probe batch of one step, its single forward pass, and caches every monitor of the step reads.

    Args:
        model: the network, already in the state a probe needs (eval mode, gradients enabled, returning logits).
        probe: the probe batch on the model's device (its images are not modified).
        layers: layers whose outputs are captured.
        inputs_of: layers whose inputs are captured (the first convolution's, for the alias fraction).
        gradients: record the graph, for Grad-CAM and class-score projections; False runs the pass without it.
        memo: where results that depend only on the architecture and the image size are kept from one step to the
            next (each layer's crop layout for single-unit projections); None keeps them for this step only.
        early: the step is an early probe and nothing more (not step 0, a regular or the final probe): a monitor may
            leave out what only the regular probes need.

    Raises:
        TypeError: from the forward pass, if a captured layer's output is not a tensor.
    """

    def __init__(
        self,
        model: nn.Module,
        probe: ProbeBatch,
        layers: Collection[str] = (),
        inputs_of: Collection[str] = (),
        gradients: bool = True,
        memo: dict[Any, Any] | None = None,
        early: bool = False,
    ) -> None:
        self.model = model
        self.early = early
        self._memo = {} if memo is None else memo
        self.probe = probe
        self.images = probe.images
        self.gradients = gradients
        self._switch = RuleSwitch("gradient")
        self._inputs = self.images.detach().clone().requires_grad_(gradients)
        outputs = {name: resolve_layer(model, name)[1] for name in layers}
        before = {name: resolve_layer(model, name)[1] for name in inputs_of}
        with ExitStack() as stack:
            if not gradients:
                stack.enter_context(torch.no_grad())
            else:
                stack.enter_context(switchable_relu(self._switch))
            acts = stack.enter_context(capture_outputs(outputs))
            seen = stack.enter_context(_capture_inputs(before))
            logits = model(self._inputs.clone())  # a non-leaf copy: a forward pass may modify its input in place
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"the model must return logits of shape (N, num_classes), got {got}")
        self._logits: Tensor = logits
        self._acts = dict(acts)
        self.layer_inputs = dict(seen)
        missing = set(outputs) - set(acts)
        if missing:
            raise ValueError(f"the forward pass never called the layer(s) {sorted(missing)}")
        self.logits: Tensor = logits.detach()
        self._cache: dict[Any, Any] = {}
        self._projections: dict[tuple[str, str, tuple[int, ...]], Tensor] = {}
        self.unit_passes = 0  # forward passes of single-unit projections, each on its own batch of unit images

    # -- plain reads ----------------------------------------------------------------------------------------------

    def activation(self, layer: str) -> Tensor:
        """The output of ``layer`` on the probe batch, Tensor of shape (N, C, H, W), detached."""
        return self._acts[layer].detach()

    @property
    def predicted(self) -> Tensor:
        """Each image's predicted class, Tensor of shape (N,)."""
        return self.logits.argmax(dim=1)

    def target(self, which: Target) -> Tensor | None:
        """The class per image a map explains (None for ``"true"`` when the probe has no labels)."""
        if which == "predicted":
            return self.predicted
        if which == "least":
            return self.logits.argmin(dim=1)
        return None if self.probe.labels is None else self.probe.labels.to(self.logits.device)

    def shared(self, key: Any, compute: Callable[[], T]) -> T:
        """``compute()``, once per step and ``key``, for any other value two monitors both need."""
        if key not in self._cache:
            self._cache[key] = compute()
        value: T = self._cache[key]
        return value

    def top_units(self, layer: str, k: int) -> TopUnits:
        """The ``k`` strongest channels of ``layer`` over the probe, each at its maximum (see ``top_k_units``)."""
        return self.shared(("top", layer, k), lambda: top_k_units(self._acts[layer].detach(), k))

    # -- partial backward passes through the shared graph ---------------------------------------------------------

    def _score(self, which: Target) -> Tensor:
        classes = self.target(which)
        if classes is None:
            raise ValueError("the probe has no labels: there is no true class to explain")
        return self._logits.gather(1, classes[:, None]).sum()

    def grad_cam(self, layer: str, which: Target = "predicted") -> Tensor:
        """Grad-CAM maps of ``layer`` for the class ``which``, Tensor of shape (N, H, W) in [0, 1] at the input's
        size (the same as :func:`~lightning_viz.methods.grad_cam`)."""

        def compute() -> Tensor:
            self._need_graph("Grad-CAM")
            act = self._acts[layer]
            if act.dim() != 4:
                raise ValueError(
                    f"Grad-CAM needs a 4-D (N, C, H, W) output from layer {layer!r}, got {tuple(act.shape)}"
                )
            (grad,) = torch.autograd.grad(self._score(which), [act], retain_graph=True)
            return cam_from(act, grad, self.images.shape[-2:])

        return self.shared(("grad_cam", layer, which), compute)

    def class_projection(self, rule: Rule, which: Target = "predicted") -> Tensor:
        """The class score of ``which`` projected to the pixels under ``rule`` (as
        :func:`~lightning_viz.methods.deconvnet` with ``layer=None``), Tensor of shape (N, C, H, W)."""

        def compute() -> Tensor:
            self._need_graph("a class-score projection")
            self._switch.set(rule)
            try:
                (grad,) = torch.autograd.grad(self._score(which), [self._inputs], retain_graph=True)
            finally:
                self._switch.set("gradient")
            return grad.detach()

        return self.shared(("class_projection", rule, which), compute)

    def _need_graph(self, what: str) -> None:
        if not self.gradients:
            raise RuntimeError(f"{what} needs the probe's graph: build the ProbeContext with gradients=True")

    # -- single-unit projections (ZF Fig. 2), one batched pass for whatever is missing ----------------------------

    def project(self, layer: str, units: Tensor, rule: Rule = "deconvnet") -> Tensor:
        """Projections of single units of ``layer`` to the pixels, one per row of ``units`` (image, channel, y, x),
        Tensor of shape (M, C, H, W). Units already projected at this step under ``rule`` are reused; the others go
        through one forward (up to ``layer``) and one backward pass, one image each."""
        return self.project_many({layer: units}, rule)[layer]

    def project_many(self, units: dict[str, Tensor], rule: Rule = "deconvnet") -> dict[str, Tensor]:
        """:meth:`project` for several layers: the missing units of each layer in one pass, which stops at that
        layer (one pass up to the deepest layer for all of them cost half as much again on a three-stage net)."""
        keys = {
            layer: [(layer, rule, tuple(int(v) for v in row)) for row in index.tolist()]
            for layer, index in units.items()
        }
        missing = list(
            dict.fromkeys(key for layer_keys in keys.values() for key in layer_keys if key not in self._projections)
        )
        by_layer: dict[str, list[tuple[str, Rule, tuple[int, ...]]]] = {}
        for key in missing:
            by_layer.setdefault(key[0], []).append(key)
        for layer, layer_keys in by_layer.items():  # a pass per layer: each stops at its own layer
            images = self.images[torch.tensor([n for _, _, (n, *_) in layer_keys], device=self.images.device)]
            cyx = torch.tensor([[c, y, x] for _, _, (_, c, y, x) in layer_keys], dtype=torch.long)
            projected = self._project(layer, images, cyx, rule).float().cpu()
            for i, key in enumerate(layer_keys):
                self._projections[key] = projected[i]
            self.unit_passes += 1
        return {
            layer: torch.stack([self._projections[key] for key in layer_keys]) for layer, layer_keys in keys.items()
        }

    def _project(self, layer: str, images: Tensor, cyx: Tensor, rule: Rule) -> Tensor:
        """Single-unit projections, on crops of the images where the layer's crop layout was shown to give the
        whole-image projections (checked on the first batch of the run: a crop that did not would be caught)."""
        key = ("crop_grid", layer, tuple(self.images.shape[1:]))
        grid = self._memo.get(key)
        if grid is not None:
            return project_units_cropped(self.model, images, layer, cyx, grid, rule)
        whole = project_units(self.model, images, {layer: (torch.arange(len(cyx)), cyx)}, rule)
        if key not in self._memo:
            self._memo[key] = self._checked_grid(layer, images, cyx, rule, whole)
        return whole

    def _checked_grid(self, layer: str, images: Tensor, cyx: Tensor, rule: Rule, whole: Tensor) -> CropGrid | None:
        """The layer's crop layout if its crops give ``whole``, the whole-image projections, else None."""
        height, width = self._acts[layer].shape[-2:]
        grid = crop_grid(self.model, tuple(self.images.shape[1:]), layer, (int(height), int(width)))
        if grid is None:
            return None
        try:
            cropped = project_units_cropped(self.model, images, layer, cyx, grid, rule)
        except Exception:  # a network that does not take a smaller input: whole images
            return None
        scale = float(whole.abs().max())
        return grid if torch.allclose(cropped, whole, rtol=1e-4, atol=1e-5 * scale) else None
