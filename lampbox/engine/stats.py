"""Paired significance tests for comparing two configurations question by question."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedTest:
    """Result of a paired test of `treatment` against `baseline` on the same questions."""

    name: str
    n: int
    mean_difference: float
    p_value: float


def paired_randomization_test(
    treatment: Sequence[float], baseline: Sequence[float], resamples: int = 10_000, seed: int = 0
) -> PairedTest:
    """Two-sided paired approximate randomization (sign-flip permutation) test.

    Under the null hypothesis the two systems are exchangeable on each question, so the sign of
    each per-question difference is a coin flip; the p-value is the share of random sign
    assignments whose mean difference is at least as extreme as the observed one, with the
    usual +1 correction. It makes no normality assumption and works for 0/1 accuracy, absolute
    errors and ROUGE alike. Seeded, so the table is reproducible.
    """
    treated = np.asarray(treatment, dtype=np.float64)
    base = np.asarray(baseline, dtype=np.float64)
    if treated.shape != base.shape:
        raise ValueError("paired samples must have the same length")
    differences = treated - base
    n = int(differences.size)
    if n == 0:
        return PairedTest("paired randomization", 0, 0.0, 1.0)
    observed = abs(differences.mean())
    nonzero = differences[differences != 0]
    if nonzero.size == 0:
        return PairedTest("paired randomization", n, 0.0, 1.0)
    rng = np.random.default_rng(seed)
    extreme = 0
    done = 0
    chunk = max(1, min(resamples, 2_000_000 // max(1, nonzero.size)))
    while done < resamples:
        size = min(chunk, resamples - done)
        signs = rng.integers(0, 2, size=(size, nonzero.size), dtype=np.int8) * 2 - 1
        means = np.abs((signs * nonzero).sum(axis=1) / n)
        extreme += int((means >= observed - 1e-12).sum())
        done += size
    return PairedTest("paired randomization", n, float(differences.mean()), (extreme + 1) / (resamples + 1))


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of m p-values (family-wise error control), in input order.

    The i-th smallest p is multiplied by m - i + 1 (i from 1), capped at 1, and made
    non-decreasing in the order of the raw p-values; so every adjusted p is >= its raw p.
    """
    raw = np.asarray(p_values, dtype=np.float64)
    m = int(raw.size)
    if m == 0:
        return []
    order = np.argsort(raw, kind="stable")
    scaled = np.minimum(1.0, raw[order] * (m - np.arange(m)))
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return [float(value) for value in adjusted]
