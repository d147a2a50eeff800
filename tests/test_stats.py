"""The paired randomization test behaves like a significance test should."""

from __future__ import annotations

import numpy as np

from lampbox.engine.stats import paired_randomization_test


def test_identical_systems_are_not_different() -> None:
    scores = [0.1, 0.5, 0.9, 0.3]
    result = paired_randomization_test(scores, scores)
    assert result.p_value == 1.0 and result.mean_difference == 0.0


def test_a_consistent_gain_is_significant_and_noise_is_not() -> None:
    rng = np.random.default_rng(1)
    baseline = rng.random(200)
    better = baseline + 0.05 + rng.normal(0, 0.02, 200)
    noisy = baseline + rng.normal(0, 0.05, 200)
    assert paired_randomization_test(better, baseline).p_value < 0.001
    assert paired_randomization_test(noisy, baseline).p_value > 0.05


def test_small_exact_case_matches_enumeration() -> None:
    # differences 1, 1, 1: of the 8 sign patterns, 2 reach |mean| >= 1 -> p = 0.25 exactly.
    result = paired_randomization_test([1, 1, 1], [0, 0, 0], resamples=200_000, seed=3)
    assert abs(result.p_value - 0.25) < 0.01
    assert result.mean_difference == 1.0
