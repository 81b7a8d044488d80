"""When a run has diverged: the rule, in one place (the trainer applies it; docs/training.md states it).

A run has diverged when a loss it reads is not finite (NaN or inf, or a non-finite gradient norm), or
when it is finite but far above the unigram baseline, the loss of a model that ignores context:

    loss > max(DIVERGENCE_FACTOR x baseline, baseline + DIVERGENCE_MIN_GAP_NATS)

checked for the validation loss at every evaluation (against the unigram loss of the same masked
targets) and for the mean training loss at every log, evaluation and checkpoint step (against the
training split's unigram loss per masked token).

Why those numbers: every run starts on the baseline (the read-out bias is the log unigram
frequencies, ``unigram_bias_init``) or, without that, near a uniform guess, log V, which is below 1.5x
the baseline on natural text; learning only goes below it. A loss three times the baseline (and at
least 10 nats above it, so that a corpus with a very low baseline is not judged by the factor alone)
is a model that is confidently wrong on nearly every token: the optimizer has blown it up (e.g.
lr=1e3 gives 1e14 nats), and it does not come back. Such a run used to end "completed"; a sweep
or comparison would then rank it as a result.
"""

from __future__ import annotations

import math

DIVERGENCE_FACTOR = 3.0
DIVERGENCE_MIN_GAP_NATS = 10.0


def divergence_limit(baseline: float) -> float:
    """The highest loss a run may read against unigram loss ``baseline`` without having diverged."""
    return max(DIVERGENCE_FACTOR * baseline, baseline + DIVERGENCE_MIN_GAP_NATS)


def divergence(loss: float, baseline: float, what: str, step: int) -> str | None:
    """Why ``loss`` (the ``what`` of ``step``) means the run has diverged, or None if it has not."""
    if not math.isfinite(loss):
        return f"non-finite {what} at step {step}"
    if math.isfinite(baseline) and loss > divergence_limit(baseline):
        return (f"{what} {loss:.4g} nats at step {step}, far above the unigram baseline {baseline:.4g} "
                f"(the limit is {divergence_limit(baseline):.4g}: max({DIVERGENCE_FACTOR:g} x baseline, "
                f"baseline + {DIVERGENCE_MIN_GAP_NATS:g}))")
    return None
