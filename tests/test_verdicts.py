"""The verdict rules on hand-made evidence: every branch, its number and its text. The thresholds are given
explicitly, so these tests do not move when the study chooses other defaults."""

from __future__ import annotations

import pytest

from lightning_viz.diagnostics import LossHistory
from lightning_viz.diagnostics.verdicts import (
    LABELS,
    NAMES,
    KernelEvidence,
    LearningRateEvidence,
    StrideEvidence,
    Thresholds,
    Verdict,
    kernel_size_verdict,
    learning_rate_verdict,
    stride_verdict,
    unless_too_high,
    verdict_lines,
    verdict_text,
)

T = Thresholds(
    progress_ok=0.1,
    stalled_progress=0.02,
    loss_rise=0.1,
    spike=2.0,
    dead_channels=0.7,
    change_low=0.05,
    low_after=100,
    min_learned=0.3,
    alias_fraction=0.3,
    coarse_map=2,
    window_share=0.9,
)


def lr(**kwargs: object) -> LearningRateEvidence:
    return LearningRateEvidence(**{"step": 100, **kwargs})  # type: ignore[arg-type]


def test_divergence_is_named_with_what_and_when() -> None:
    verdict = learning_rate_verdict(lr(nonfinite="the training loss since step 49", loss_progress=0.3), T)
    assert verdict.value == 1
    assert "diverged: the training loss since step 49 not finite (NaN or inf)" in verdict.text


def test_learning_rate_abstains_until_the_loss_has_been_seen() -> None:
    verdict = learning_rate_verdict(lr(step=0), T)
    assert verdict.value is None and verdict.text.startswith("… not enough evidence yet")


@pytest.mark.parametrize(
    ("evidence", "value", "words"),
    [
        (dict(loss_progress=0.2, spike=1.1, change=0.4, dead_channels=0.0), 0, "ok: the training loss is falling"),
        (dict(loss_progress=-0.3, spike=1.3, change=0.9, dead_channels=0.0), 1, "rose above its start"),
        (dict(loss_progress=0.0, spike=1.0, change=1.0, dead_channels=0.95), 1, "most units died"),
        (dict(loss_progress=0.05, spike=3.0, change=0.8, dead_channels=0.1), 1, "jumped to 3.0 times its start"),
        # a jump or dead units the loss has recovered from: the loss decides
        (dict(loss_progress=0.4, spike=3.0, change=0.8, dead_channels=0.9), 0, "ok: the training loss is falling"),
        # a plateau: the loss has not moved yet but the network has
        (dict(loss_progress=0.0, spike=1.0, change=0.3, dead_channels=0.1), 0, "ok: the network is learning"),
        (dict(loss_progress=0.001, spike=1.0, change=0.001, dead_channels=0.0), -1, "too low"),
        (dict(step=50, loss_progress=0.001, spike=1.0, change=0.001), None, "too low if it stays so until step 100"),
        (dict(loss_progress=0.05, spike=1.0, change=0.01), None, "not enough evidence yet"),
    ],
)
def test_learning_rate_rules(evidence: dict[str, float], value: int | None, words: str) -> None:
    verdict = learning_rate_verdict(lr(**evidence), T)
    assert verdict.value == value and words in verdict.text
    if value in (-1, 1):
        assert verdict.text.startswith("✗") and "try a rate ten times" in verdict.text
        assert verdict.degree is not None and verdict.degree > 1  # past its line


def test_stride_rules() -> None:
    assert stride_verdict(StrideEvidence("conv1", 3, 1), T).value == 0  # stride 1 cannot alias
    untrained = stride_verdict(StrideEvidence("conv1", 7, 2, learned=0.05, alias_fraction=0.9), T)
    assert untrained.value is None and "random initialisation (learned share 5%, needed 30%)" in untrained.text
    aliasing = stride_verdict(StrideEvidence("conv1", 11, 4, learned=0.5, alias_fraction=0.6), T)
    assert aliasing.value == 1 and aliasing.degree == pytest.approx(2.0)
    assert "60% of conv1 (11x11, stride 4)'s response" in aliasing.text and "try stride 2" in aliasing.text
    assert "blur before subsampling" in aliasing.text and aliasing.text.startswith("✗")
    assert stride_verdict(StrideEvidence("conv1", 7, 2, learned=0.5, alias_fraction=0.1, deepest_map=7), T).value == 0
    # a 2x2 deepest map: the stride costs resolution, which the alias fraction does not judge: no "ok"
    coarse = stride_verdict(StrideEvidence("conv1", 7, 2, learned=0.5, alias_fraction=0.1, deepest_map=2), T)
    assert coarse.value is None and "the deepest feature map is 2x2" in coarse.text
    # but aliasing is aliasing at any resolution
    assert stride_verdict(StrideEvidence("conv1", 7, 4, learned=0.5, alias_fraction=0.4, deepest_map=1), T).value == 1


def test_kernel_rules() -> None:
    small = kernel_size_verdict(KernelEvidence("conv1", 1, 2), T)
    assert small.value == -1 and "never sees 75% of the pixels" in small.text and "try kernel 3" in small.text
    assert kernel_size_verdict(KernelEvidence("conv1", 3, 4), T).value == -1  # before any training: it is geometry
    three = kernel_size_verdict(KernelEvidence("conv1", 3, 2, learned=0.9, rim_share=1.0, window=3), T)
    assert three.value is None and "no rim to judge its size by" in three.text
    untrained = kernel_size_verdict(KernelEvidence("conv1", 11, 4, learned=0.1, rim_share=0.2, window=5), T)
    assert untrained.value is None and "not enough evidence yet" in untrained.text
    larger = kernel_size_verdict(KernelEvidence("conv1", 11, 2, learned=0.5, rim_share=0.3, window=5), T)
    assert larger.value == 1 and "central 5x5" in larger.text and "try kernel 5" in larger.text
    assert "79% fewer multiply-adds" in larger.text and larger.degree == pytest.approx(11 / 5)
    # the suggested kernel is never smaller than the stride
    assert "try kernel 4" in kernel_size_verdict(KernelEvidence("conv1", 11, 4, 0.5, 0.3, window=3), T).text
    ok = kernel_size_verdict(KernelEvidence("conv1", 7, 2, learned=0.5, rim_share=0.9, window=7), T)
    assert ok.value == 0 and "use all of it" in ok.text


def test_the_first_layer_waits_while_the_learning_rate_is_too_high() -> None:
    too_high = learning_rate_verdict(LearningRateEvidence(300, None, 0.0, 5.0, 0.5, 0.0), T)
    ok = learning_rate_verdict(LearningRateEvidence(300, None, 0.5, 1.0, 0.5, 0.0), T)
    assert too_high.value == 1 and ok.value == 0
    aliasing = stride_verdict(StrideEvidence("conv1", 11, 4, 0.5, 0.4, 7), T)
    assert unless_too_high(aliasing, ok) == aliasing
    waiting = unless_too_high(aliasing, too_high)
    assert waiting.value is None and "not enough evidence yet: the learning rate is too high" in waiting.text
    assert unless_too_high(kernel_size_verdict(KernelEvidence("conv1", 7, 2, 0.5, 0.8, 7), T), too_high).value is None
    # what the shapes alone say stands: stride 1, a kernel smaller than its stride
    assert unless_too_high(stride_verdict(StrideEvidence("conv1", 3, 1), T), too_high).value == 0
    assert unless_too_high(kernel_size_verdict(KernelEvidence("conv1", 1, 2), T), too_high).value == -1
    no_rim = kernel_size_verdict(KernelEvidence("conv1", 3, 2, 0.5, 1.0, 3), T)
    assert unless_too_high(no_rim, too_high) == no_rim
    # an abstention for want of learned filters becomes the reason that matters: the rate
    untrained = unless_too_high(stride_verdict(StrideEvidence("conv1", 7, 2), T), too_high)
    assert "the learning rate is too high" in untrained.text


def _every_branch() -> list[Verdict]:
    """One verdict from each branch of the three rules, and the abstention while the rate is too high."""
    rates = [
        lr(nonfinite="the training loss since step 49"),
        lr(step=0),
        *(lr(**e) for e in (
            dict(loss_progress=0.2, spike=1.1, change=0.4, dead_channels=0.0),
            dict(loss_progress=-0.3, spike=1.3, change=0.9, dead_channels=0.0),
            dict(loss_progress=0.0, spike=1.0, change=1.0, dead_channels=0.95),
            dict(loss_progress=0.05, spike=3.0, change=0.8, dead_channels=0.1),
            dict(loss_progress=0.0, spike=1.0, change=0.3, dead_channels=0.1),
            dict(loss_progress=0.001, spike=1.0, change=0.001, dead_channels=0.0),
            dict(step=50, loss_progress=0.001, spike=1.0, change=0.001),
        )),
    ]  # fmt: skip
    strides = [
        StrideEvidence("conv1", 3, 1),
        StrideEvidence("conv1", 7, 2, learned=0.05, alias_fraction=0.9),
        StrideEvidence("conv1", 11, 4, learned=0.5, alias_fraction=0.6),
        StrideEvidence("conv1", 7, 2, learned=0.5, alias_fraction=0.1, deepest_map=2),
        StrideEvidence("conv1", 7, 2, learned=0.5, alias_fraction=0.1, deepest_map=7),
    ]
    kernels = [
        KernelEvidence("conv1", 1, 2),
        KernelEvidence("conv1", 3, 2, learned=0.9, rim_share=1.0, window=3),
        KernelEvidence("conv1", 11, 4, learned=0.1, rim_share=0.2, window=5),
        KernelEvidence("conv1", 11, 2, learned=0.5, rim_share=0.3, window=5),
        KernelEvidence("conv1", 7, 2, learned=0.5, rim_share=0.9, window=7),
    ]
    too_high = learning_rate_verdict(lr(loss_progress=0.0, spike=5.0, change=0.5, dead_channels=0.0), T)
    return [
        *(learning_rate_verdict(e, T) for e in rates),
        *(stride_verdict(e, T) for e in strides),
        *(kernel_size_verdict(e, T) for e in kernels),
        unless_too_high(stride_verdict(strides[2], T), too_high),
    ]


def test_every_verdict_line_starts_with_the_mark_of_its_severity() -> None:
    """✗ failing, ✓ ok, … not enough evidence yet, – no verdict (none can be given)."""
    verdicts = _every_branch()
    for verdict in verdicts:
        if verdict.value in (-1, 1):
            assert verdict.text.startswith("✗ "), verdict
        elif verdict.value == 0:
            assert verdict.text.startswith("✓ ok: "), verdict
        elif "not enough evidence yet" in verdict.text:
            assert verdict.text.startswith("… not enough evidence yet: "), verdict
        else:
            assert verdict.text.startswith("– no verdict: "), verdict
    assert {v.text[0] for v in verdicts} == {"✗", "✓", "…", "–"}  # every kind of line is among them


def test_step_zero_says_only_what_it_knows() -> None:
    """Before any update, a verdict that needs training abstains; only the shapes' own facts are stated."""
    texts = [
        learning_rate_verdict(LearningRateEvidence(0), T).text,
        stride_verdict(StrideEvidence("conv1", 7, 2, learned=0.0, alias_fraction=0.2, deepest_map=7), T).text,
        kernel_size_verdict(KernelEvidence("conv1", 7, 2, learned=0.0, rim_share=1.0, window=7), T).text,
    ]
    assert all(text.startswith("… not enough evidence yet: ") for text in texts), texts
    assert stride_verdict(StrideEvidence("conv1", 3, 1), T).text.startswith("✓ ok: conv1 (3x3, stride 1) samples")
    assert kernel_size_verdict(KernelEvidence("conv1", 1, 2), T).text.startswith("✗ too small: conv1 (1x1, stride 2)")


def test_verdict_text_is_one_markdown_paragraph_per_verdict() -> None:
    """The text TensorBoard shows under ``diagnostics/verdicts``, and ``lightning-viz report`` reads back."""
    verdicts = [Verdict("kernel_size", None, "– no verdict: 3x3"), Verdict("learning_rate", 1, "✗ too high: x")]
    assert verdict_text(verdicts, 120) == (
        "Step 120:\n\n- **kernel size**: – no verdict: 3x3\n\n- **learning rate**: ✗ too high: x"
    )


def test_verdict_lines_read_back_what_verdict_text_wrote() -> None:
    """Texts as a probe logs them (kernel size, stride, learning rate), over every branch of each rule."""
    by_name = {name: [v for v in _every_branch() if v.name == name] for name in NAMES}
    for i in range(max(len(found) for found in by_name.values())):
        verdicts = [found[i % len(found)] for found in by_name.values()]
        lines = verdict_lines(verdict_text(verdicts, 10 * i))
        assert lines == {v.name: v.text for v in verdicts}
        assert list(lines) == list(NAMES)
    assert verdict_lines(verdict_text([], 0)) == {}


def test_every_verdict_value_has_a_name_and_a_label() -> None:
    assert set(LABELS) == set(NAMES)
    for verdict in _every_branch():
        assert verdict.name in NAMES
        assert verdict.value is None or verdict.value in LABELS[verdict.name], verdict


# -- the learning rate over a long run: what the verdict reads from the recent window and the rate -------------------


def _history(losses: list[float], rates: list[float] | None = None) -> LossHistory:
    history = LossHistory()
    for step, loss in enumerate(losses):
        history.add(step, loss, None if rates is None else rates[step])
    return history


def _falling(steps: int, start: float = 1.8, end: float = 0.4) -> list[float]:
    """A loss that falls from ``start`` towards ``end`` (exponentially, half-way in 300 steps), with a ripple."""
    return [end + (start - end) * 0.5 ** (s / 300) + 0.02 * ((s * 7919) % 13 - 6) / 6 for s in range(steps)]


def test_history_measures_the_recent_fall_the_rise_over_the_best_and_where_it_began() -> None:
    flat = _history([1.0 + 0.01 * (s % 2) for s in range(500)])
    assert flat.recent_progress() == pytest.approx(0.0, abs=1e-3)
    assert LossHistory().recent_progress() is None and _history([1.0] * 399).recent_progress() is None
    losses = _falling(1000) + [1.5] * 100  # the loss jumps at step 1000
    history = _history(losses)
    now, best, best_step, began = history.rise()  # type: ignore[misc]
    assert now == pytest.approx(1.5) and best < 0.6 and 900 < best_step < 1000 and began == 1000
    assert history.recent_progress() is not None and history.recent_progress() < -0.5  # type: ignore[operator]


def test_history_follows_the_rate_peak_decay_and_restarts() -> None:
    rates = [0.1] * 200 + [1e-5] * 300
    history = _history(_falling(500), rates)
    assert (history.rate, history.peak_rate, history.peak_rate_step, history.low_since) == (1e-5, 0.1, 0, 200)
    assert history.rate_rising() is False and _history(_falling(100)).rate_rising() is None
    assert _history(_falling(150), [0.1 * (s + 1) / 1000 for s in range(150)]).rate_rising()  # a warm-up
    history = _history(_falling(800) + [1.2] * 100, [0.1] * 400 + [0.001] * 400 + [0.1] * 100)  # a warm restart
    evidence = history.evidence(900)
    assert evidence.rate_rose and evidence.rate_at_best == 0.1 and evidence.rate == 0.1
    assert evidence.low_since is None  # back up: no longer decayed
    state = history.state_dict()
    again = LossHistory()
    again.load_state_dict(state)
    assert again.evidence(900) == evidence


def _long(**kwargs: object) -> LearningRateEvidence:
    """A long run's evidence: the loss fell 60 % since its first batch, and the network moves."""
    base = dict(step=1500, loss_progress=0.6, spike=1.0, change=0.6, dead_channels=0.0, recent_progress=0.1,
                recent_change=0.05, recent_steps=100, start=1.8, now=0.7, best=0.68, best_step=1400, rise_began=1450,
                rate=0.02, rate_before_rise=0.02, rate_at_best=0.02, rate_rose=False, peak_rate=0.02)  # fmt: skip
    return LearningRateEvidence(**{**base, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("evidence", "value", "words"),
    [
        (dict(), 0, "ok: the training loss is falling"),
        # a jump of the rate to a level never used: named, with the rate it left
        (dict(now=1.6, rate=0.6, rate_rose=True), 1, "the rate went from 0.02 to 0.6: try 0.02"),
        # the loss rose at a constant rate (an instability): named, with a tenth of the rate
        (dict(now=1.6), 1, "too high now: the loss rose from 0.68 (its best, by step 1400) to 1.6 since step 1450"),
        # a warm restart: back up to a rate the run learned at; the rise is planned
        (dict(now=1.6, rate_rose=True, rate_before_rise=1e-4), 0, "a warm restart"),
        # a small rise, or a rise that is small against the first batch's loss: noise, not a jump
        (dict(now=0.9), 0, "ok"),
        (dict(now=0.2, best=0.1, rate=0.6, rate_rose=True), 0, "ok"),
        # decayed too early: the loss fell, then the schedule stopped the run for longer than it had trained
        (dict(recent_progress=0.01, recent_change=0.001, rate=1e-5, low_since=100), -1, "decayed too early"),
        # stuck near its start now (the loss fell a little, then the rate dropped)
        (
            dict(loss_progress=0.08, recent_progress=0.0, recent_change=0.002, rate=1e-5, low_since=100),
            -1,
            "keep 0.02 for longer",
        ),
        (dict(loss_progress=0.08, recent_progress=0.0, recent_change=0.002, rate=1e-4), -1, "try 0.001"),
        # the end of a decayed schedule: flat after a clear fall, the rate near zero, not for longer than it trained
        (
            dict(step=1500, recent_progress=0.0, recent_change=0.0, rate=1e-8, low_since=1340),
            0,
            "a decayed schedule's end",
        ),
        # flat at a constant rate after a clear fall: no verdict of a rate too low (the loss fell)
        (dict(recent_progress=0.0, recent_change=0.001), 0, "ok"),
        # a warm-up: the run has barely moved while the rate is still rising; judged once it stops
        (
            dict(
                step=150,
                loss_progress=0.01,
                change=0.01,
                recent_progress=None,
                recent_change=None,
                rate=0.001,
                rate_rising=True,
            ),
            None,
            "the rate is still rising (a warm-up)",
        ),
        (
            dict(step=150, loss_progress=0.01, change=0.01, recent_progress=None, recent_change=None, rate=0.001),
            -1,
            "too low: the loss stalled",
        ),
    ],
)
def test_learning_rate_over_a_long_run(evidence: dict[str, object], value: int | None, words: str) -> None:
    verdict = learning_rate_verdict(_long(**evidence), T)
    assert verdict.value == value and words in verdict.text, verdict.text
    if value in (-1, 1):
        assert verdict.degree is not None and verdict.degree > 1  # past its line


def test_the_verdicts_advice_names_the_rate_to_try() -> None:
    diverged = learning_rate_verdict(lr(nonfinite="the training loss since step 900", rate=0.5), T)
    assert "try 0.05 (it was 0.5)" in diverged.text
    risen = learning_rate_verdict(lr(loss_progress=-0.3, spike=1.3, change=0.9, dead_channels=0.0, rate=0.3), T)
    assert risen.value == 1 and "try 0.03" in risen.text and "rate 0.3" in risen.text
