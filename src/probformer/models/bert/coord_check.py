"""The encoder families' coordinate-check base model and lr (run by
:mod:`probformer.experiments.coord_check`); UT shares them, being BERT's layer applied T times.

Why these values: docs/results/coord-check.md, "What it took".
"""

from __future__ import annotations

import math
from typing import Any

# 3x the 1e-3 BERT / UT train at. Not PT's 1e-2: there HF's init made BERT's loss spike at the
# same step at every width, so the check compared spike phases rather than scalings.
COORD_CHECK_LR = 3e-3


def coord_check_base(base_width: int, vocab_size: int, seq_len: int) -> dict[str, Any]:
    """ProbformerBertConfig fields of a tiny base model at width N0 = ``base_width``, dropout off.

    N0 = 32: 2 heads of 16 (wider models add heads), FFN 4N, 2 layers / steps.
    init_std: the muP family through HF BERT-base's init (std 0.02 at N = 768): under muP the
    hidden std at width N is sigma * sqrt(N0 / N), so sigma = 0.02 * sqrt(768 / N0) (0.098 at
    N0 = 32). HF's 0.02 at N0 = 32 would make q, k, v ~5x smaller than in a real BERT and the
    first steps' attention logits tiny and dominated by finite-width noise.
    """
    return dict(vocab_size=vocab_size, hidden_size=base_width, num_heads=2, num_layers=2,
                intermediate_size=4 * base_width, max_position_embeddings=max(512, seq_len),
                hidden_dropout=0.0, attention_dropout=0.0, init_std=0.02 * math.sqrt(768 / base_width))
