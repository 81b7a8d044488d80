"""PT's coordinate-check base model and lr (run by :mod:`probformer.experiments.coord_check`).

Why these values: docs/results/coord-check.md, "What it took".
"""

from __future__ import annotations

from typing import Any

# At or above PT's working lr, so that a width-dependent update size shows within a few steps.
COORD_CHECK_LR = 1e-2


def coord_check_base(base_width: int, vocab_size: int, seq_len: int) -> dict[str, Any]:
    """PTConfig fields of a tiny base model at width N0 = ``base_width``, dropout off.

    N0 = 32: channels 2, rank 16 (r_tot = N0), latent 64 (M = 2N), T = 3; wider models add channels
    (with ``--set model.head_paradigm=1`` they keep r_tot = 32 and grow the head temperature instead).
    """
    return dict(vocab_size=vocab_size, hidden_size=base_width, num_channels=2, rank=max(1, base_width // 2),
                latent_size=2 * base_width, num_iterations=3, head_dropout=0.0, label_dropout=0.0,
                max_position_embeddings=max(512, seq_len))
