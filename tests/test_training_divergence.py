"""probformer.training.divergence: the rule that ends a run as diverged, NaN or far above the baseline."""

from __future__ import annotations

import math

from probformer.training.divergence import DIVERGENCE_FACTOR, DIVERGENCE_MIN_GAP_NATS, divergence, divergence_limit


def test_a_finite_loss_far_above_the_unigram_baseline_has_diverged():
    assert divergence(1.3e14, 5.56, "validation loss", 60).startswith("validation loss 1.3e+14 nats at step 60, far "
                                                                       "above the unigram baseline 5.56")
    assert divergence(float("nan"), 5.56, "validation loss", 60) == "non-finite validation loss at step 60"
    assert divergence(float("inf"), 5.56, "validation loss", 60) == "non-finite validation loss at step 60"


def test_a_loss_on_or_near_the_baseline_has_not():
    for baseline in (2.0, 5.56, 6.34, 9.0):
        assert divergence(baseline, baseline, "loss", 1) is None
        assert divergence(math.log(4096), baseline, "loss", 1) is None  # a uniform guess over 4096 tokens
        assert divergence(divergence_limit(baseline), baseline, "loss", 1) is None
        assert divergence(divergence_limit(baseline) * 1.001, baseline, "loss", 1) is not None
    # the limit: max(3 x baseline, baseline + 10 nats)
    assert divergence_limit(5.56) == DIVERGENCE_FACTOR * 5.56
    assert divergence_limit(2.0) == 2.0 + DIVERGENCE_MIN_GAP_NATS
