from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset, TensorDataset, default_collate
from torchvision import transforms

from lightning_viz import ProbeBatch
from lightning_viz.data import Shapes


@pytest.fixture(scope="module")
def shapes() -> Shapes:
    return Shapes(size=120, seed=3)


def test_deterministic_and_class_balanced(shapes: Shapes) -> None:
    loader = DataLoader(shapes, batch_size=16, shuffle=True)
    a = ProbeBatch.from_dataloader(loader, size=12, seed=0)
    b = ProbeBatch.from_dataloader(loader, size=12, seed=0)
    c = ProbeBatch.from_dataloader(loader, size=12, seed=1)
    assert a.indices == b.indices and torch.equal(a.images, b.images)
    assert a.indices != c.indices
    assert a.labels is not None and torch.bincount(a.labels, minlength=6).tolist() == [2] * 6
    assert a.masks is not None and a.masks.shape == (12, 64, 64)
    assert a.class_names == shapes.classes and a.mean == shapes.mean and a.std == shapes.std


def test_reading_the_probe_draws_no_random_numbers() -> None:
    class Augmented(Dataset):
        def __len__(self) -> int:
            return 50

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return torch.rand(3, 8, 8), i % 5  # an augmentation that draws from the global generator

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    ProbeBatch.from_dataloader(DataLoader(Augmented()), size=10)
    assert torch.equal(torch.rand(3), expected)


def test_display_undoes_the_normalisation(shapes: Shapes) -> None:
    probe = ProbeBatch.from_dataloader(DataLoader(shapes), size=6)
    raw = Shapes(size=120, seed=3, normalize=False)
    expected = torch.stack([raw[i][0] for i in probe.indices or []])
    torch.testing.assert_close(probe.display_images(), expected, atol=1e-5, rtol=0)
    # raw images: nothing to undo, so the probe must not take the normalised dataset's mean and std
    unnormalised = ProbeBatch.from_dataloader(DataLoader(raw), size=6)
    assert raw.mean is None and unnormalised.mean is None and unnormalised.std is None
    torch.testing.assert_close(unnormalised.display_images(), unnormalised.images.clamp(0, 1))


def test_normalisation_found_through_subset_and_torchvision_normalize() -> None:
    class Folder(Dataset):
        classes = ["a", "b"]
        transform = transforms.Compose([transforms.Normalize((0.4, 0.5, 0.6), (0.2, 0.2, 0.3))])

        def __len__(self) -> int:
            return 20

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return self.transform(torch.full((3, 4, 4), 0.5)), i % 2

    probe = ProbeBatch.from_dataloader(DataLoader(Subset(Folder(), range(10))), size=4)
    assert probe.mean == (0.4, 0.5, 0.6) and probe.std == (0.2, 0.2, 0.3) and probe.class_names == ["a", "b"]
    torch.testing.assert_close(probe.display_images(), torch.full((4, 3, 4, 4), 0.5))


def test_dict_batches_and_user_given_normalisation() -> None:
    class Dicts(Dataset):
        def __len__(self) -> int:
            return 30

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"image": torch.full((1, 6, 6), float(i)), "label": torch.tensor(i % 3), "mask": torch.ones(1, 6, 6)}

    probe = ProbeBatch.from_dataloader(DataLoader(Dicts(), batch_size=4), size=6, mean=[0.0], std=[0.01])
    assert probe.images.shape == (6, 1, 6, 6) and probe.masks is not None and probe.masks.shape == (6, 6, 6)
    assert probe.labels is not None and sorted(probe.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    torch.testing.assert_close(probe.display_images(), probe.images * 0.01)  # x * std + mean


def test_pairs_without_labels_and_iterable_datasets() -> None:
    images = torch.randn(20, 3, 5, 5)
    probe = ProbeBatch.from_dataloader(DataLoader(TensorDataset(images)), size=5)
    assert probe.labels is None and len(probe) == 5

    class Stream(IterableDataset):
        def __iter__(self):  # type: ignore[no-untyped-def]
            for i in range(9):
                yield images[i], i % 3

    probe = ProbeBatch.from_dataloader(DataLoader(Stream(), batch_size=4), size=6)
    assert torch.equal(probe.images, images[:6]) and probe.labels is not None
    with pytest.raises(ValueError, match="probe size 10 is larger than the data, which yielded 9 samples"):
        ProbeBatch.from_dataloader(DataLoader(Stream(), batch_size=4), size=10)


def test_state_dict_round_trip(shapes: Shapes) -> None:
    probe = ProbeBatch.from_dataloader(DataLoader(shapes), size=6)
    again = ProbeBatch.from_state_dict(probe.state_dict())
    assert torch.equal(again.images, probe.images) and again.indices == probe.indices
    assert again.labels is not None and probe.labels is not None and torch.equal(again.labels, probe.labels)
    assert repr(again) == "ProbeBatch(6 images 3x64x64, labels, masks)"


def test_validation_messages() -> None:
    with pytest.raises(
        TypeError, match=r"expected a float or uint8 tensor \(N, C, H, W\), got torch.float32 tensor of shape"
    ):
        ProbeBatch(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match=r"labels must be an integer tensor of shape \(2,\)"):
        ProbeBatch(torch.zeros(2, 3, 4, 4), labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"masks must have shape \(2, H, W\) matching the images, got \(2, 5, 5\)"):
        ProbeBatch(torch.zeros(2, 3, 4, 4), masks=torch.zeros(2, 5, 5))
    with pytest.raises(ValueError, match="give both mean and std"):
        ProbeBatch(torch.zeros(2, 3, 4, 4), mean=(0.5,))
    with pytest.raises(ValueError, match="probe size must be a positive int, got 0"):
        ProbeBatch.from_dataloader(DataLoader(TensorDataset(torch.zeros(4, 3, 2, 2))), size=0)


def grey(samples: list) -> tuple:  # type: ignore[type-arg]
    """A collate function that turns the RGB Shapes into grey images: the dataset's normalisation no longer fits."""
    images, labels, masks = default_collate(samples)
    return images.mean(dim=1, keepdim=True), labels, masks


def test_a_dataset_normalisation_that_does_not_fit_the_loaders_images_is_left_out(shapes: Shapes) -> None:
    probe = ProbeBatch.from_dataloader(DataLoader(shapes, collate_fn=grey), size=6)
    assert probe.images.shape[1] == 1 and probe.mean is None and probe.std is None
    shown = probe.display_images()
    assert shown.shape[1] == 1 and float(shown.min()) >= 0 and float(shown.max()) <= 1
    with pytest.raises(ValueError, match=r"mean must have one value per image channel \(1\) or one for all, got 3"):
        ProbeBatch(probe.images, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))
    assert ProbeBatch(probe.images, mean=(0.5,), std=(0.2,)).display_images().shape == (6, 1, 64, 64)
    assert ProbeBatch.from_dataloader(DataLoader(shapes), size=6).mean == shapes.mean  # a fitting one is kept


def test_fewer_images_than_classes_the_seed_picks_the_classes() -> None:
    data = TensorDataset(torch.randn(200, 3, 4, 4), torch.arange(200) % 20)
    picks = [sorted(ProbeBatch.from_dataloader(DataLoader(data), size=5, seed=s).labels.tolist()) for s in range(4)]
    assert len({tuple(p) for p in picks}) > 1 and all(len(set(p)) == 5 for p in picks)
    assert picks[0] != [0, 1, 2, 3, 4]


def test_other_channel_counts_are_displayed_with_three_or_one() -> None:
    assert ProbeBatch(torch.randn(2, 4, 5, 5)).display_images().shape == (2, 3, 5, 5)
    assert ProbeBatch(torch.randn(2, 2, 5, 5)).display_images().shape == (2, 1, 5, 5)
