"""Known answers for the diagnostic functions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightning_viz.diagnostics import (
    LossHistory,
    alias_fraction,
    band_energies,
    coverage_gap,
    dead_channel_fraction,
    dead_filters,
    dominance,
    dominant_band_shares,
    energy_window,
    lattice_peak_ratio,
    linear_cka,
    nonfinite_parameters,
    rank_correlation,
    rim_share,
    rms_growth,
    shift_consistency,
    smoothness_index,
    uneven_overlap,
    update_ratio,
)


def _band_areas(size: int = 64) -> torch.Tensor:
    f = torch.fft.fftfreq(size, dtype=torch.float64)
    r = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2).flatten()[1:]  # DC excluded
    return torch.stack([(r < 1 / 8).sum(), ((r >= 1 / 8) & (r < 1 / 4)).sum(), (r >= 1 / 4).sum()]).double() / len(r)


def test_white_noise_filters_have_the_band_shares_of_the_frequency_plane() -> None:
    torch.manual_seed(0)
    shares = band_energies(torch.randn(2000, 3, 7, 7)).mean(dim=0)
    torch.testing.assert_close(shares, _band_areas(), atol=0.01, rtol=0)
    assert torch.allclose(band_energies(torch.randn(5, 3, 7, 7)).sum(dim=1), torch.ones(5, dtype=torch.float64))


def test_a_gaussian_blob_is_low_band_and_a_checkerboard_high_band() -> None:
    y, x = torch.meshgrid(torch.arange(11.0) - 5, torch.arange(11.0) - 5, indexing="ij")
    blob = torch.exp(-(x**2 + y**2) / (2 * 2.0**2)).expand(1, 3, 11, 11)
    checker = ((-1.0) ** (x + y)).expand(1, 3, 11, 11)
    assert band_energies(blob)[0, 0] > 0.9
    assert band_energies(checker)[0, 2] > 0.9
    shares = dominant_band_shares(torch.cat([blob, blob, checker]))
    torch.testing.assert_close(shares, torch.tensor([2 / 3, 0.0, 1 / 3], dtype=torch.float64))


def test_smoothness_index_is_zero_for_noise_one_for_constant_negative_for_checkerboard() -> None:
    torch.manual_seed(0)
    assert abs(float(smoothness_index(torch.randn(4000, 3, 7, 7)).mean())) < 0.01
    assert torch.allclose(smoothness_index(torch.ones(2, 3, 5, 5)), torch.ones(2, dtype=torch.float64))
    y, x = torch.meshgrid(torch.arange(5.0), torch.arange(5.0), indexing="ij")
    assert smoothness_index(((-1.0) ** (x + y)).expand(1, 1, 5, 5))[0] < -0.5
    with pytest.raises(ValueError, match="square kernels of size >= 2, got 1x1"):
        smoothness_index(torch.ones(1, 1, 1, 1))


def test_dead_and_dominating_filters() -> None:
    weight = torch.ones(6, 3, 3, 3) * torch.tensor([1.0, 1.0, 1.0, 1.0, 0.05, 4.0]).view(-1, 1, 1, 1)
    assert dead_filters(weight).tolist() == [False, False, False, False, True, False]
    assert dominance(weight) == pytest.approx(4.0)


@pytest.mark.parametrize(("kernel", "stride", "expected"), [(11, 4, 2.25), (7, 2, 16 / 9), (3, 1, 1.0), (8, 4, 1.0)])
def test_uneven_overlap(kernel: int, stride: int, expected: float) -> None:
    assert uneven_overlap(kernel, stride) == pytest.approx(expected)


def test_a_stride_larger_than_the_kernel_leaves_pixels_unseen() -> None:
    assert uneven_overlap(3, 4) == math.inf  # some pixels are covered by no window at all
    assert coverage_gap(1, 2) == 0.75 and coverage_gap(3, 4) == pytest.approx(1 - 9 / 16)
    assert coverage_gap(7, 2) == 0.0 and coverage_gap(4, 4) == 0.0
    with pytest.raises(ValueError, match="need a positive kernel and stride, got kernel 0, stride 2"):
        coverage_gap(0, 2)
    with pytest.raises(ValueError, match="need a positive kernel and stride, got kernel 3, stride 0"):
        uneven_overlap(3, 0)


def _centred(k: int, inner: int) -> torch.Tensor:
    """Filters of size k x k that are 1 on the central inner x inner window and 0 elsewhere."""
    weight = torch.zeros(4, 3, k, k)
    lo = (k - inner) // 2
    weight[..., lo : lo + inner, lo : lo + inner] = 1.0
    return weight


def test_rim_share_is_one_for_noise_zero_for_a_centred_filter_and_high_for_a_frame() -> None:
    torch.manual_seed(0)
    assert rim_share(torch.randn(2000, 3, 7, 7)) == pytest.approx(1.0, abs=0.02)
    assert rim_share(_centred(7, 5)) == 0.0
    frame = torch.ones(1, 1, 5, 5)
    frame[..., 1:4, 1:4] = 0
    assert rim_share(frame) == pytest.approx(25 / 16)  # all the energy on a ring that is 16/25 of the area
    with pytest.raises(ValueError, match="kernels of size >= 3, got 1x1"):
        rim_share(torch.ones(1, 1, 1, 1))


def test_energy_window_is_the_size_the_filters_use() -> None:
    assert energy_window(_centred(7, 3)) == 3
    assert energy_window(_centred(11, 5)) == 5
    assert energy_window(_centred(7, 1)) == 1
    assert energy_window(_centred(8, 2)) == 2  # even kernels: even windows
    assert energy_window(torch.ones(1, 1, 7, 7)) == 7  # an even spread needs the whole kernel for 90 %
    assert energy_window(torch.ones(1, 1, 7, 7), share=0.5) == 5  # 25 of 49 pixels
    assert energy_window(torch.zeros(1, 1, 5, 5)) == 5


def test_alias_fraction_of_an_identity_and_of_a_blur() -> None:
    torch.manual_seed(0)
    noise = torch.randn(8, 3, 64, 64)
    identity = nn.Conv2d(3, 3, 3, stride=2, padding=1, bias=False)
    with torch.no_grad():
        identity.weight.zero_()
        for c in range(3):
            identity.weight[c, c, 1, 1] = 1.0
    # white noise passed unchanged: power is even, and 33 of 64 frequencies per axis are within 1/4 cycles/px
    assert alias_fraction(identity, noise) == pytest.approx(1 - (33 / 64) ** 2, abs=0.02)
    y, x = torch.meshgrid(torch.arange(9.0) - 4, torch.arange(9.0) - 4, indexing="ij")
    blur = nn.Conv2d(3, 1, 9, stride=2, padding=4, bias=False)
    with torch.no_grad():
        blur.weight.copy_(torch.exp(-(x**2 + y**2) / (2 * 2.0**2)).expand(1, 3, 9, 9))
    assert alias_fraction(blur, noise) < 0.01  # a low-pass filter leaves nothing to fold back
    assert alias_fraction(identity, noise, weight=blur.weight.expand(3, 3, 9, 9)[..., 3:6, 3:6]) < 0.75
    stride_one = nn.Conv2d(3, 3, 3, padding=1)
    assert alias_fraction(stride_one, noise) == 0.0
    with pytest.raises(ValueError, match=r"images must have shape \(N, C, H, W\), got \(3, 64, 64\)"):
        alias_fraction(identity, noise[0])


def test_loss_history_progress_jump_and_the_first_non_finite_step() -> None:
    history = LossHistory(window=3)
    for step, loss in enumerate([2.0, 5.0, 1.9]):
        history.add(step, loss)
        assert history.progress() is None and history.spike() is None  # not a full window after the first batch
    history.add(3, 1.1)
    assert history.progress() == pytest.approx(1 - (5.0 + 1.9 + 1.1) / 3 / 2.0)
    assert history.spike() == 2.5  # the largest loss over the first batch's
    history.add(4, float("nan"))
    history.add(5, float("inf"))
    assert history.first_nonfinite_step == 4
    restored = LossHistory(window=3)
    restored.load_state_dict(history.state_dict())
    assert (restored.progress(), restored.spike()) == (history.progress(), 2.5) and restored.first_nonfinite_step == 4
    with pytest.raises(ValueError, match="need window >= 1, .*got 0, 25, 200, 200"):
        LossHistory(window=0)


def test_nonfinite_parameters_are_named() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert nonfinite_parameters(net) == []
    with torch.no_grad():
        net[0].bias[1] = float("nan")
    net[1].running_var[0] = float("inf")
    assert nonfinite_parameters(net) == ["0.bias", "1.running_var"]


def test_lattice_peak_ratio_finds_a_period_stride_pattern() -> None:
    torch.manual_seed(0)
    noise = torch.randn(8, 3, 64, 64)
    lattice = torch.zeros(8, 3, 64, 64)
    lattice[..., ::4, ::4] = 1.0
    assert abs(lattice_peak_ratio(noise, 4)) < 0.1
    assert lattice_peak_ratio(noise + 3 * lattice, 4) > 1.0
    assert lattice_peak_ratio(noise + 3 * lattice, 1) == 0.0


def test_shift_consistency() -> None:
    torch.manual_seed(0)
    invariant = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"), nn.AdaptiveAvgPool2d(1),
                              nn.Flatten())  # fmt: skip
    images = torch.randn(4, 3, 16, 16)
    assert shift_consistency(invariant, images) < 1e-6
    corner = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.LazyLinear(5))
    corner(images)
    assert shift_consistency(corner, images) > 0.01


def test_learning_rate_numbers() -> None:
    w = torch.ones(10, 10)
    assert update_ratio(w, w * 1.001) == pytest.approx(1e-3, rel=1e-4)  # float32 rounding of 1.001
    assert rms_growth(w * 3, w) == pytest.approx(3.0)
    acts = torch.rand(4, 5, 3, 3)
    acts[:, 1] = 0
    assert dead_channel_fraction(acts) == pytest.approx(0.2)


def test_linear_cka() -> None:
    torch.manual_seed(0)
    x = torch.randn(50, 8)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3 * x @ rotation) == pytest.approx(1.0)
    assert linear_cka(x, torch.randn(50, 8)) < 0.5


def test_rank_correlation_with_ties() -> None:
    a = torch.tensor([[1.0, 2.0, 2.0, 3.0, 5.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    b = torch.tensor([[2.0, 3.0, 1.0, 4.0, 6.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    ra = torch.tensor([1.0, 2.5, 2.5, 4.0, 5.0])  # average ranks of the tied pair
    rb = torch.tensor([2.0, 3.0, 1.0, 4.0, 5.0])
    expected = torch.corrcoef(torch.stack([ra, rb]))[0, 1].double()
    result = rank_correlation(a, b)
    assert result[0] == pytest.approx(float(expected)) and result[1] == 0.0
    assert rank_correlation(b[:1], b[:1] ** 3)[0] == pytest.approx(1.0)
    assert math.isclose(float(rank_correlation(b[:1], -b[:1])[0]), -1.0)


def test_pointing_games_known_answers() -> None:
    from lightning_viz.diagnostics.quality import energy_pointing_game, pointing_game

    masks = torch.zeros(2, 8, 8)
    masks[0, 2:4, 2:6] = 1  # 8 of 64 pixels
    masks[1, 5:, 5:] = 1  # 9 of 64
    assert pointing_game(masks, masks).tolist() == [1.0, 1.0]
    assert energy_pointing_game(masks, masks).tolist() == [1.0, 1.0]
    constant = torch.ones(2, 8, 8)
    assert pointing_game(constant, masks).tolist() == [8 / 64, 9 / 64]  # chance: the object's area fraction
    assert energy_pointing_game(constant, masks).tolist() == [8 / 64, 9 / 64]
    miss = torch.zeros(2, 8, 8)
    miss[:, 0, 0] = 1
    assert pointing_game(miss, masks).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match=r"must both have shape \(N, H, W\)"):
        pointing_game(torch.zeros(2, 8, 8), torch.zeros(2, 4, 4))


def test_class_sensitivity_known_answers() -> None:
    from lightning_viz.diagnostics.quality import class_sensitivity

    torch.manual_seed(0)
    a = torch.rand(3, 6, 6)
    assert torch.allclose(class_sensitivity(a, 2 * a + 1), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(class_sensitivity(a, -a), -torch.ones(3, dtype=torch.float64))
    assert class_sensitivity(a, torch.ones(3, 6, 6)).tolist() == [0.0, 0.0, 0.0]
    assert class_sensitivity(torch.ones(3, 6, 6), torch.zeros(3, 6, 6)).tolist() == [1.0, 1.0, 1.0]
