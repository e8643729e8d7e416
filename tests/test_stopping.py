"""Stopping criteria on synthetic histories with known answers."""

import numpy as np
import pytest

from diip_deploy.runtime.optimise.stopping import (
    decide,
    laplacian_stop,
    laplacian_variance,
    raw_slopes,
    slope_stop,
    smoothed_slopes,
)
from diip_deploy.settings import RestoreSettings as Rule


def test_raw_slope_definition():
    s = raw_slopes([4.0, 2.0, 1.0, 1.0])
    assert np.isnan(s[0])
    np.testing.assert_allclose(s[1:], [0.5, 0.5, 0.0])


def test_slope_stop_on_geometric_then_flat_loss():
    # 10% drop per iteration up to k = 30, then flat: the 5-window mean falls below eps
    # once the window holds enough flat steps: mean(0.1*a + 0*b) < 1e-3 needs all 5 flat.
    losses = [0.9**k for k in range(31)] + [0.9**30] * 20
    d = slope_stop(losses, eps=1e-3, window=5)
    assert d is not None and d.iteration == 35 and d.reason == "slope"


def test_slope_smoothing_ignores_a_single_flat_step():
    losses = list(0.95 ** np.arange(40))
    losses[10] = losses[9]  # one stalled Adam step
    assert slope_stop(losses, eps=1e-3, window=1).iteration == 10
    assert slope_stop(losses, eps=1e-3, window=5) is None
    assert np.isnan(smoothed_slopes(losses, 5)[4]) and not np.isnan(smoothed_slopes(losses, 5)[5])


def test_laplacian_peak_after_k_min():
    k = np.arange(200)
    v = -((k - 150.0) ** 2)  # rises to a peak at 150, then falls
    v[20] = v[21] + 5  # an early local bump before k_min is ignored
    d = laplacian_stop(v, k_min=100)
    assert d.iteration == 150 and d.detected_at == 151 and d.reason == "laplacian"
    assert laplacian_stop(v[:151], k_min=100) is None  # the peak is not known before k = 151


def test_auto_takes_whichever_is_detected_first():
    losses = [0.9**k for k in range(60)] + [0.9**60] * 20  # slope stops at 65
    lap = list(-((np.arange(80) - 40.0) ** 2))  # peak at 40, known at 41
    assert decide(losses, lap, Rule(stop="auto", k_min=10)).reason == "laplacian"
    late_peak = list(-((np.arange(80) - 75.0) ** 2))  # peak at 75, after the slope stop
    assert decide(losses, late_peak, Rule(stop="auto", k_min=10)).reason == "slope"
    assert decide(losses, lap, Rule(stop="slope", k_min=10)).iteration == 65
    assert decide(losses, lap, Rule(stop="laplacian", k_min=10)).iteration == 40
    assert decide(losses, lap, Rule(stop="none")) is None
    with pytest.raises(ValueError):
        decide(losses, lap, Rule(stop="sometimes"))


def test_laplacian_variance_grows_with_detail():
    rng = np.random.default_rng(0)
    flat = np.zeros((1, 3, 16, 16))
    noisy = rng.standard_normal((1, 3, 16, 16))
    assert laplacian_variance(flat)[0] == 0.0
    assert laplacian_variance(noisy)[0] > 1.0


@pytest.mark.parametrize("mode", ["auto", "slope", "laplacian", "none", "paper-auto"])
@pytest.mark.parametrize("seed", range(12))
def test_online_stopper_matches_decide_on_the_history(mode, seed):
    """The batch loop's per-sample stopper sees one iteration at a time; its first decision
    must be the one the pure function gives on the history up to then."""
    from diip_deploy.runtime.optimise.stopping import Stopper

    rng = np.random.default_rng(seed)
    n = 120
    losses = np.exp(-np.linspace(0, rng.uniform(1, 4), n)) * (1 + rng.normal(0, rng.uniform(0, 0.02), n)) + 0.05
    laps = np.sin(np.linspace(0, rng.uniform(2, 8), n)) + rng.normal(0, 0.05, n)
    kw = dict(
        eps=float(rng.uniform(1e-4, 5e-3)),
        slope_window=int(rng.integers(1, 8)),
        k_min=int(rng.integers(0, 40)),
        slope_min_iter=int(rng.integers(0, 30)),
        patience=int(rng.integers(1, 5)),
        slope_fit=["mean", "regression"][seed % 2],
        lap_window=int(rng.integers(1, 6)),
    )
    rule = Rule(stop=mode, **kw)
    stopper = Stopper(rule)
    online = None
    for k in range(n):
        online = stopper.update(losses[k], laps[k])
        if online is not None:
            break
    offline = None
    for k in range(n):  # what decide says as the history grows
        offline = decide(losses[: k + 1], laps[: k + 1], rule)
        if offline is not None:
            break
    assert online == offline
    if mode == "none":
        assert online is None


def test_noisy_start_fools_the_window_but_not_a_minimum_iteration_or_patience():
    """Adam's early bump (loss falls, rises, falls) makes the smoothed slope negative at
    k = 7: the shipped rule stops there.  A minimum iteration or patience waits it out."""
    bump = [3.6, 0.87, 0.61, 0.73, 0.75, 0.72, 0.68, 0.66]
    losses = bump + list(0.66 * 0.97 ** np.arange(1, 60)) + [0.66 * 0.97**59] * 20
    assert slope_stop(losses, eps=1e-3, window=5).iteration == 7
    late = slope_stop(losses, eps=1e-3, window=5, min_iter=20)
    assert late is not None and late.iteration > 60
    assert slope_stop(losses, eps=1e-3, window=5, patience=3).iteration > 60


def test_regression_slope_of_a_geometric_decay():
    """A loss falling 5% per iteration has a regression slope of about 5% of its mean."""
    losses = 0.95 ** np.arange(30)
    s = smoothed_slopes(losses, 10, fit="regression")
    assert np.isnan(s[9]) and 0.045 < s[20] < 0.055


def test_smoothed_laplacian_peak_ignores_a_one_iteration_blip():
    v = np.concatenate([np.linspace(0, 1, 60), np.linspace(1, 0.5, 40)])
    v[30] += 0.05  # one blip on the way up
    assert laplacian_stop(v, k_min=10).iteration == 30
    assert laplacian_stop(v, k_min=10, window=5).iteration >= 59


def test_paper_auto_is_the_raw_rules():
    from diip_deploy.runtime.optimise.stopping import resolved

    r = resolved(Rule(stop="paper-auto", slope_window=9, slope_min_iter=40, patience=4, lap_window=3))
    assert (r.stop, r.slope_window, r.slope_min_iter, r.patience, r.lap_window) == ("auto", 1, 0, 1, 1)
    losses = list(0.95 ** np.arange(40))
    losses[10] = losses[9]
    assert decide(losses, np.zeros(40), Rule(stop="paper-auto", slope_window=5, k_min=100)).iteration == 10
