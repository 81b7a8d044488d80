"""probformer.experiments.noise: the seed-noise rule -- seeds' mean and sample std, the standard error of a
difference, and when a difference is real."""

from __future__ import annotations

import math

import numpy as np
import pytest

from probformer.experiments import noise


def test_seeds_are_mean_and_sample_std():
    s = noise.Seeds.of([6.1, 6.3, 6.2])
    assert (s.mean, s.n) == (pytest.approx(6.2), 3) and s.std == pytest.approx(0.1)  # ddof 1
    one = noise.Seeds.of([6.1])
    assert one.mean == 6.1 and math.isnan(one.std) and one.n == 1


def test_noise_is_the_standard_error_of_the_difference():
    a, b = noise.Seeds.of([1.0, 1.2, 1.1, 1.3]), noise.Seeds.of([0.9, 1.0])
    d = noise.difference(a, b)
    by_hand = math.sqrt(np.var([1.0, 1.2, 1.1, 1.3], ddof=1) / 4 + np.var([0.9, 1.0], ddof=1) / 2)
    assert d.delta == pytest.approx(1.15 - 0.95) and d.noise == pytest.approx(by_hand)
    assert d.ratio == pytest.approx(0.2 / by_hand)
    # Two seeds a side: the noise is the pooled seed std (compare's old rule, at its old 2x threshold).
    two = noise.difference(noise.Seeds(5.0, 0.03, 2), noise.Seeds(5.1, 0.04, 2))
    assert two.noise == pytest.approx(math.sqrt((0.03**2 + 0.04**2) / 2))


def test_real_beyond_k_times_the_noise_and_no_verdict_without_two_seeds():
    noise_of = math.sqrt(2 * 0.01**2 / 2)  # sides of std 0.01 at 2 seeds each
    just_inside = noise.difference(noise.Seeds(1.0 + noise.K * noise_of * 0.99, 0.01, 2), noise.Seeds(1.0, 0.01, 2))
    just_outside = noise.difference(noise.Seeds(1.0 - noise.K * noise_of * 1.01, 0.01, 2), noise.Seeds(1.0, 0.01, 2))
    assert not just_inside.real and just_outside.real and just_outside.delta < 0
    # Beyond the larger seed std but within 2 standard errors: real under lr-curves' old rule, not now.
    old_rule_real = noise.difference(noise.Seeds(1.015, 0.01, 2), noise.Seeds(1.0, 0.01, 2))
    assert old_rule_real.delta > 0.01 and not old_rule_real.real
    single = noise.difference(noise.Seeds(1.0, math.nan, 1), noise.Seeds(5.0, 0.01, 2))
    assert not single.estimated and not single.real and math.isnan(single.ratio)
    exact = noise.difference(noise.Seeds(1.0, 0.0, 2), noise.Seeds(1.5, 0.0, 2))
    assert exact.real and exact.ratio == math.inf
