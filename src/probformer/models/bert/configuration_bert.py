"""ProbformerBertConfig: the BERT baseline's hyperparameters (docs/design.md §4 and 6)."""

from __future__ import annotations

from typing import Literal

from transformers import PretrainedConfig

from probformer.models.config_utils import complete_label_maps, replace_config
from probformer.parametrization import PRESETS, TransformerScales, transformer_scales


class ProbformerBertConfig(PretrainedConfig):
    """Configuration of :class:`~probformer.models.bert.modeling_bert.ProbformerBertForMaskedLM`.

    The width is ``hidden_size`` (N). A wider member of the same family adds heads at a fixed
    ``head_dim`` and grows ``intermediate_size`` in proportion (:meth:`with_width`); the ``base_*``
    fields fix the base model (N0, d_head0, I0) the muP multipliers are relative to. Left as ``None``
    the model is its own base, so muP and SP share every forward multiplier (docs/design.md §4a). The FFN
    output projection's muP multiplier is I/I0, its own fan-in's (:mod:`probformer.parametrization`);
    without ``base_intermediate_size`` (models saved before it existed) I0 is taken to be in proportion
    to N0, which makes that multiplier N/N0 as for every other hidden matrix.
    """

    model_type = "probformer-bert"

    def __init__(
        self,
        vocab_size: int = 4096,
        hidden_size: int = 128,  # N: width of the residual stream
        num_layers: int = 4,  # encoder layers (UT: recurrent steps of one shared layer)
        num_heads: int = 4,  # attention heads; hidden_size must be a multiple of it
        intermediate_size: int = 512,  # FFN width (4N by default)
        max_position_embeddings: int = 512,  # rows of the learned absolute position table
        hidden_dropout: float = 0.1,  # dropout on embeddings and on each sublayer's output
        attention_dropout: float = 0.1,  # dropout on attention probabilities
        layer_norm_eps: float = 1e-12,  # HF BERT's value, so copied weights give the same forward
        pre_layer_norm: bool = False,  # False: post-LN (= HF BERT); True: pre-LN blocks + a final LayerNorm
        parametrization: Literal["sp", "mup"] = "mup",  # SP = HF BERT; muP = mutransformers (docs/design.md §6)
        base_hidden_size: int | None = None,  # N0 (None: this model is its own base)
        base_head_dim: int | None = None,  # d_head at the base width (None: this model's head_dim)
        base_intermediate_size: int | None = None,  # I0, the FFN width at the base (None: I * N0 / N)
        input_mult: float = 1.0,  # alpha_in on the normalised embeddings
        output_mult: float = 1.0,  # alpha_out on the decoder input
        attn_mult: float = 1.0,  # alpha_attn relative to 1/sqrt(d_head) at the base head size
        init_std: float = 0.02,  # sigma: std of embeddings and hidden matrices at the base width
        init_std_output: float = 0.0,  # std of the untied muP decoder (0 = zero init); SP ties it
        classifier_dropout: float | None = None,  # task heads' dropout (HF's field; None: hidden_dropout)
        pad_token_id: int = 0,
        mask_token_id: int = 4,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.max_position_embeddings = max_position_embeddings
        self.hidden_dropout = hidden_dropout
        self.attention_dropout = attention_dropout
        self.layer_norm_eps = layer_norm_eps
        self.pre_layer_norm = pre_layer_norm
        self.parametrization = parametrization
        self.base_hidden_size = base_hidden_size
        self.base_head_dim = base_head_dim
        self.base_intermediate_size = base_intermediate_size
        self.input_mult = input_mult
        self.output_mult = output_mult
        self.attn_mult = attn_mult
        self.init_std = init_std
        self.init_std_output = init_std_output
        self.classifier_dropout = classifier_dropout
        self.mask_token_id = mask_token_id
        # Tying is decided by the preset (a property below); drop a stale value from a saved JSON.
        kwargs.pop("tie_word_embeddings", None)
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        complete_label_maps(self)
        self.validate_bert()

    def validate_bert(self) -> None:
        positive = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                    "max_position_embeddings")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of num_heads ({self.num_heads})")
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.classifier_dropout is not None and not 0.0 <= self.classifier_dropout < 1.0:
            raise ValueError(f"classifier_dropout must be in [0, 1) or null, got {self.classifier_dropout!r}")
        if not isinstance(self.pre_layer_norm, bool):
            raise ValueError(f"pre_layer_norm must be true or false, got {self.pre_layer_norm!r}")
        if self.layer_norm_eps <= 0:
            raise ValueError(f"layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        if self.parametrization not in PRESETS:
            raise ValueError(f"parametrization must be one of {PRESETS}, got {self.parametrization!r}")
        for name in ("base_hidden_size", "base_head_dim", "base_intermediate_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or null, got {value!r}")
        for name in ("input_mult", "output_mult", "attn_mult"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("init_std", "init_std_output"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id must be a token id below vocab_size, got {self.pad_token_id!r}")

    # -- derived values -------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def tie_word_embeddings(self) -> bool:
        """SP ties the decoder to the word embeddings (HF BERT); muP unties it (docs/design.md §6)."""
        return self.parametrization == "sp"

    @tie_word_embeddings.setter
    def tie_word_embeddings(self, value: bool) -> None:
        """Ignored (the preset decides): transformers 4's PretrainedConfig.__init__ assigns its default here."""

    @property
    def resolved_base(self) -> tuple[int, int]:
        """(N0, d_head0) the muP multipliers are relative to."""
        return self.base_hidden_size or self.hidden_size, self.base_head_dim or self.head_dim

    @property
    def resolved_base_intermediate_size(self) -> float:
        """I0 the FFN output's muP multiplier is relative to: the field, else I in proportion to N0."""
        if self.base_intermediate_size is not None:
            return float(self.base_intermediate_size)
        return self.intermediate_size * self.resolved_base[0] / self.hidden_size

    def scales(self) -> TransformerScales:
        n0, d0 = self.resolved_base
        return transformer_scales(
            preset=self.parametrization,
            hidden_size=self.hidden_size,
            head_dim=self.head_dim,
            base_hidden_size=n0,
            base_head_dim=d0,
            input_mult=self.input_mult,
            output_mult=self.output_mult,
            attn_mult=self.attn_mult,
            init_std=self.init_std,
            init_std_output=self.init_std_output,
            intermediate_size=self.intermediate_size,
            base_intermediate_size=self.resolved_base_intermediate_size,
        )

    def with_width(self, hidden_size: int) -> ProbformerBertConfig:
        """The same family at width ``hidden_size``: heads grow at fixed head_dim, the FFN in proportion,
        the base (N0, d_head0, I0) stays put. ``hidden_size`` must be a multiple of ``head_dim``."""
        if hidden_size % self.head_dim:
            raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of head_dim ({self.head_dim})")
        n0, d0 = self.resolved_base
        return replace_config(
            self,
            hidden_size=hidden_size,
            num_heads=hidden_size // self.head_dim,
            intermediate_size=max(1, round(self.intermediate_size * hidden_size / self.hidden_size)),
            base_hidden_size=n0,
            base_head_dim=d0,
            # a model that is its own base fixes I0 = its I; one saved without I0 keeps I in proportion to N
            base_intermediate_size=self.base_intermediate_size
            or (self.intermediate_size if self.base_hidden_size is None else None),
        )
