"""UniversalTransformerForMaskedLM and its task models: the Universal Transformer baseline (Dehghani et
al. 2018; docs/design.md §6, 9).

How it differs from a standard transformer encoder (here: our BERT, :mod:`..bert.modeling_bert`):
- ONE encoder layer (:class:`BertLayer`, the same class as BERT's; post-LN, or pre-LN with a final
  LayerNorm under ``pre_layer_norm``) is applied ``num_layers`` = T times with shared weights, so the
  parameter count does not grow with depth (only the timestep table does) while the compute per
  token is that of a T-layer BERT. ``compile_regions`` compiles that one layer, so compile time does
  not grow with T either; activation checkpointing recomputes each of the T applications.
- Before step t a learned timestep embedding tau_t (an INPUT-role table, T x N) is added to the
  layer input: x_t = Layer(x_{t-1} + tau_t). The paper's coordinate embedding adds sinusoidal
  position and timestep vectors at every step; we keep BERT's learned absolute positions at the
  input and learn the timestep vectors.
- No adaptive computation time (ACT): every token takes all T steps.
- Embeddings, MLM head, task heads (docs/design.md §9), SP / muP parametrization (docs/design.md §4,
  4a) and taps are BERT's; the taps are per *step*, so hooks see each application of the shared layer.
"""

from __future__ import annotations

import torch
from torch import nn

from probformer.models.bert.modeling_bert import (
    BertLayer,
    MLMEncoder,
    SequenceClassificationEncoder,
    TokenClassificationEncoder,
)
from probformer.models.ut.configuration_ut import UniversalTransformerConfig
from probformer.parametrization import Role, tag


class UTStack:
    """The UT's encoder stack: ONE layer applied at every step, a timestep vector added before each
    (mixed into a :class:`~probformer.models.bert.modeling_bert.TransformerEncoder`)."""

    def build_stack(self, config: UniversalTransformerConfig) -> None:
        self.layer = BertLayer(config)
        self.timestep = tag(nn.Embedding(config.num_layers, config.hidden_size), weight=Role.INPUT)

    def layer_at(self, step: int) -> BertLayer:
        return self.layer

    def step_input(self, x: torch.Tensor, step: int) -> torch.Tensor:
        return x + self.timestep.weight[step]  # (B, n, N) + (N,)


class UniversalTransformerForMaskedLM(UTStack, MLMEncoder):
    config_class = UniversalTransformerConfig


class UniversalTransformerForTokenClassification(UTStack, TokenClassificationEncoder):
    config_class = UniversalTransformerConfig


class UniversalTransformerForSequenceClassification(UTStack, SequenceClassificationEncoder):
    config_class = UniversalTransformerConfig
