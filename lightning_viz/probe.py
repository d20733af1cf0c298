"""The fixed probe batch: the same images at every logging step, so TensorBoard's step slider shows the model
changing and not the data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from lightning_viz.methods import rng_state, set_rng_state

__all__ = ["ProbeBatch"]

_IMAGE_KEYS = ("image", "images", "img", "x", "input", "inputs", "pixel_values")
_LABEL_KEYS = ("label", "labels", "target", "targets", "y", "class", "cls")
_MASK_KEYS = ("mask", "masks", "segmentation", "seg")


def _pick(batch: Mapping[str, Any], keys: Sequence[str]) -> Any:
    return next((batch[key] for key in keys if key in batch), None)


def split_batch(batch: Any) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Split a loader batch into ``(images, labels, masks)``.

    Accepts a tensor of images, ``(x,)``, ``(x, y)``, ``(x, y, mask)`` and dicts with keys such as ``"image"``,
    ``"label"``, ``"mask"``. Labels other than one class index per image (one-hot, boxes) are ignored; masks of
    shape (N, 1, H, W) are squeezed to (N, H, W).

    Raises:
        TypeError: if no image tensor of shape (N, C, H, W) can be found.
    """
    if isinstance(batch, Tensor):
        images, labels, masks = batch, None, None
    elif isinstance(batch, Mapping):
        images, labels, masks = _pick(batch, _IMAGE_KEYS), _pick(batch, _LABEL_KEYS), _pick(batch, _MASK_KEYS)
    elif isinstance(batch, (tuple, list)) and 1 <= len(batch) <= 3:
        images, labels, masks = (*batch, None, None)[:3]
    else:
        raise TypeError(
            f"cannot find images in a batch of type {type(batch).__name__}: expected a tensor, (x,), (x, y), "
            f"(x, y, mask) or a dict with one of the keys {_IMAGE_KEYS}"
        )
    if (
        not isinstance(images, Tensor)
        or images.dim() != 4
        or not (images.is_floating_point() or images.dtype == torch.uint8)
    ):
        got = f"{images.dtype} tensor of shape {tuple(images.shape)}" if isinstance(images, Tensor) else type(images)
        raise TypeError(f"lightning_viz probes image batches: expected a float or uint8 tensor (N, C, H, W), got {got}")
    n = images.shape[0]
    if isinstance(labels, Tensor) and labels.shape in ((n,), (n, 1)) and labels.is_floating_point():
        # a binary classifier's targets (BCE): 0.0 / 1.0 are class indices
        labels = labels.reshape(n).long() if bool(((labels == 0) | (labels == 1)).all()) else None
    if not (isinstance(labels, Tensor) and labels.shape == (n,) and not labels.is_floating_point()):
        labels = None
    if isinstance(masks, Tensor) and masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if not (isinstance(masks, Tensor) and masks.shape == (n, *images.shape[-2:])):
        masks = None
    return images, labels, None if masks is None else masks.float()


def _unwrap(dataset: Any) -> Any:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def _normalization(dataset: Any) -> tuple[tuple[float, ...], tuple[float, ...]] | tuple[None, None]:
    """Mean and std the dataset normalises with: its own ``mean``/``std``, or a torchvision ``Normalize``."""
    base = _unwrap(dataset)
    if hasattr(base, "mean") and hasattr(base, "std"):
        if base.mean is None or base.std is None:  # a dataset that says it does not normalise
            return None, None
        return tuple(float(v) for v in base.mean), tuple(float(v) for v in base.std)
    transform = getattr(base, "transform", None)
    for step in getattr(transform, "transforms", [transform]):
        if type(step).__name__ == "Normalize" and hasattr(step, "mean"):
            return tuple(float(v) for v in step.mean), tuple(float(v) for v in step.std)
    return None, None


def _class_names(dataset: Any) -> list[str] | None:
    classes = getattr(_unwrap(dataset), "classes", None)
    return [str(c) for c in classes] if isinstance(classes, Sequence) and not isinstance(classes, str) else None


def _balanced(order: list[int], labels: Sequence[int], size: int) -> list[int]:
    """Take ``size`` indices from ``order`` round-robin over classes, classes and their members both in ``order``'s
    order (so with fewer images than classes, the seed picks which classes appear)."""
    queues: dict[int, list[int]] = {}  # insertion order: first appearance in the seeded order
    for index, label in zip(order, labels, strict=True):
        queues.setdefault(int(label), []).append(index)
    chosen: list[int] = []
    while len(chosen) < size and any(queues.values()):
        for label in queues:
            if queues[label] and len(chosen) < size:
                chosen.append(queues[label].pop(0))
    return chosen


def _fits(values: tuple[float, ...] | None, images: Any) -> bool:
    """Whether normalisation ``values`` have one value per channel of ``images`` (N, C, H, W), or one for all."""
    return values is None or not isinstance(images, Tensor) or images.dim() != 4 or len(values) in (1, images.shape[1])


@dataclass(frozen=True, eq=False)
class ProbeBatch:
    """A fixed batch of probe images, with optional labels and object masks, and how to show them.

    Args:
        images: Tensor of shape (N, C, H, W), as the model receives them (normalised).
        labels: class indices, Tensor of shape (N,), or None.
        masks: ground-truth object masks, Tensor of shape (N, H, W) with values in [0, 1], or None.
        mean: per-channel mean the images were normalised with, to undo it for display (None: unknown); one value
            per channel, or one for all.
        std: per-channel std, as ``mean``.
        class_names: names for the class indices, or None to show the indices.
        indices: the dataset indices the images came from, when they came from a map-style dataset.

    Example::

        >>> from lightning_viz.data import Shapes
        >>> loader = DataLoader(Shapes(size=60), batch_size=8)
        >>> probe = ProbeBatch.from_dataloader(loader, size=12, seed=0)
        >>> probe.images.shape, sorted(probe.labels.tolist()) == sorted(list(range(6)) * 2)
        (torch.Size([12, 3, 64, 64]), True)
    """

    images: Tensor
    labels: Tensor | None = None
    masks: Tensor | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    class_names: list[str] | None = None
    indices: list[int] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        images, labels, masks = split_batch((self.images, self.labels, self.masks))
        if labels is None and self.labels is not None:
            raise ValueError(f"labels must be an integer tensor of shape ({len(images)},), got {self.labels!r}")
        if masks is None and self.masks is not None:
            shape = tuple(self.masks.shape) if isinstance(self.masks, Tensor) else type(self.masks).__name__
            raise ValueError(f"masks must have shape ({len(images)}, H, W) matching the images, got {shape}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if not _fits(value, images):
                raise ValueError(
                    f"{name} must have one value per image channel ({images.shape[1]}) or one for all, got {len(value)}"
                )
        object.__setattr__(self, "masks", masks)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        extras = [name for name in ("labels", "masks") if getattr(self, name) is not None]
        return f"ProbeBatch({n} images {c}x{h}x{w}{''.join(', ' + e for e in extras)})"

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> ProbeBatch:
        """Return a copy with images (cast to ``dtype`` when given), labels and masks on ``device``."""
        return replace(
            self,
            images=self.images.to(device=device, dtype=dtype or self.images.dtype),
            labels=None if self.labels is None else self.labels.to(device),
            masks=None if self.masks is None else self.masks.to(device),
        )

    def display_images(self) -> Tensor:
        """The images for display: Tensor of shape (N, C, H, W), values in [0, 1], float32, on the CPU.

        The normalisation is undone when mean and std are known; otherwise images already in [0, 1] are shown as
        they are and others min-max scaled, each on its own. Images
        with other than 1 or 3 channels are shown by their first channel (2 channels) or first three (4 or more).
        """
        images = self.images.detach().float().cpu()
        if self.images.dtype == torch.uint8:
            images = images / 255.0
        if self.mean is not None and self.std is not None:
            mean = torch.tensor(self.mean)[None, :, None, None]
            std = torch.tensor(self.std)[None, :, None, None]
            images = (images * std + mean).clamp(0.0, 1.0)
        elif images.numel() and (images.min() < 0 or images.max() > 1):
            flat = images.flatten(1)
            low, high = flat.min(1).values, flat.max(1).values
            images = (images - low[:, None, None, None]) / (high - low).clamp_min(1e-12)[:, None, None, None]
        channels = images.shape[1]
        return images if channels in (1, 3) else images[:, :1] if channels == 2 else images[:, :3]

    def class_name(self, index: int) -> str:
        """The name of class ``index``, or the index itself when names are unknown."""
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return str(index)

    def state_dict(self) -> dict[str, Any]:
        """The probe as plain tensors and lists, for a callback's ``state_dict`` (a resumed run shows the same
        images)."""
        return {
            "images": self.images.detach().cpu(),
            "labels": None if self.labels is None else self.labels.cpu(),
            "masks": None if self.masks is None else self.masks.cpu(),
            "mean": self.mean,
            "std": self.std,
            "class_names": self.class_names,
            "indices": self.indices,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> ProbeBatch:
        """Rebuild a probe saved with :meth:`state_dict`."""
        return cls(**state)

    @classmethod
    def from_dataloader(
        cls,
        dataloader: DataLoader[Any],
        size: int = 16,
        seed: int = 0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> ProbeBatch:
        """Pick a probe batch from a loader's dataset, deterministically and class-balanced where labels exist.

        From a map-style dataset, indices are drawn by a permutation seeded with ``seed`` and taken round-robin
        over classes (labels are read from ``dataset.targets`` when present, else from the items of a bounded
        scan), then collated with the loader's ``collate_fn``, so transforms apply as in training. From an
        iterable dataset the first ``size`` items are taken. No generator state changes: augmentations that draw
        random numbers while the probe is read do not shift training's random stream.

        Args:
            dataloader: the loader to draw from; its dataset is indexed directly, the loader is not iterated
                (unless the dataset is iterable).
            size: number of probe images.
            seed: selects which images.
            mean: normalisation mean for display; default: taken from the dataset (``mean`` attribute or a
                torchvision ``Normalize`` in its ``transform``) when it can and it has a value per channel of the
                images the loader yields (a ``collate_fn`` that turns RGB into grey makes the dataset's untrue).
            std: as ``mean``.
            class_names: names of the classes; default: the dataset's ``classes`` when it has them.

        Returns:
            The probe batch.

        Raises:
            ValueError: if ``size`` is not positive or the dataset holds fewer than ``size`` samples.
            TypeError: if the batches hold no (N, C, H, W) float images.
        """
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"probe size must be a positive int, got {size!r}")
        dataset: Dataset[Any] = dataloader.dataset
        found_mean, found_std = _normalization(dataset)
        mean = tuple(mean) if mean is not None else found_mean
        std = tuple(std) if std is not None else found_std
        names = list(class_names) if class_names is not None else _class_names(dataset)
        saved = rng_state()
        chosen = None
        try:
            if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
                images, labels, masks = _first_items(dataloader, size)
            else:
                chosen = _choose_indices(dataloader, size, seed)
                images, labels, masks = split_batch(dataloader.collate_fn([dataset[i] for i in chosen]))
        finally:
            set_rng_state(saved)
        if mean is found_mean and not _fits(mean, images):  # the loader changed the channels
            mean = std = None
        return cls(images, labels, masks, mean, std, names, chosen)


def _choose_indices(dataloader: DataLoader[Any], size: int, seed: int) -> list[int]:
    dataset = dataloader.dataset
    n = len(dataset)  # type: ignore[arg-type]
    if size > n:
        raise ValueError(f"probe size {size} is larger than the dataset, which holds {n} samples")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == n:
        return _balanced(order, [int(targets[i]) for i in order], size)
    scanned = order[: min(n, max(8 * size, 256))]
    labels = [split_batch(dataloader.collate_fn([dataset[i]]))[1] for i in scanned]
    if any(label is None for label in labels):
        return order[:size]
    return _balanced(scanned, [int(label[0]) for label in labels if label is not None], size)


def _first_items(dataloader: DataLoader[Any], size: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
    parts: list[tuple[Tensor, Tensor | None, Tensor | None]] = []
    count = 0
    for batch in dataloader:
        parts.append(split_batch(batch))
        count += len(parts[-1][0])
        if count >= size:
            break
    if count < size:
        raise ValueError(f"probe size {size} is larger than the data, which yielded {count} samples")
    images = torch.cat([p[0] for p in parts])[:size]
    labels = None if any(p[1] is None for p in parts) else torch.cat([p[1] for p in parts if p[1] is not None])[:size]
    masks = None if any(p[2] is None for p in parts) else torch.cat([p[2] for p in parts if p[2] is not None])[:size]
    return images, labels, masks
