"""UniversalTransformerConfig: the Universal Transformer baseline (docs/design.md §6)."""

from __future__ import annotations

from probformer.models.bert.configuration_bert import ProbformerBertConfig


class UniversalTransformerConfig(ProbformerBertConfig):
    """Configuration of :class:`~probformer.models.ut.modeling_ut.UniversalTransformerForMaskedLM`.

    Every field means what it means for BERT, except ``num_layers``: the number of recurrent steps
    T of the one shared layer (and of rows of the timestep embedding).
    """

    model_type = "probformer-ut"

    # BERT's typed __init__, bound here explicitly: transformers turns a config subclass without its
    # own __init__ into a dataclass with a generated one (dropping these fields), and the training
    # config validates keys against this signature.
    __init__ = ProbformerBertConfig.__init__
