"""ProbformerBertForMaskedLM and its task models: the BERT baseline, our own implementation
(docs/design.md §4, 4a, 6 and 9).

How it differs from a standard transformer encoder (HF ``BertForMaskedLM``):
- Under SP, not at all: post-LN encoder, learned absolute positions, a token-type row, GELU FFN,
  MLM head = dense + GELU + LayerNorm and a decoder with bias tied to the word embeddings. HF weights
  copied in (:meth:`ProbformerBertForMaskedLM.from_hf_bert`) give HF's logits. There is no pooler, no NSP head and
  only segment A's token-type row (MLM never uses segment B).
- Under muP (as mutransformers): attention logits are multiplied by ``attn_mult * sqrt(d0) / d_head``
  instead of ``1/sqrt(d_head)``; hidden matrices (Q, K, V, O, FFN in, head transform) start at
  ``sigma / sqrt(m)`` and train at lr / m (:func:`probformer.parametrization.param_groups`), the FFN
  output projection at ``sigma / sqrt(m_ffn)`` and lr / m_ffn with its own fan-in's m_ffn = I / I0; the
  query projection starts at zero; the decoder is untied, starts at ``init_std_output`` (0: zeros)
  and reads ``(alpha_out / m)`` times its input (MuReadout).
  At the base width (m = 1, d_head = d0) every multiplier equals SP's, so given the same weights the
  muP forward *is* the SP forward (docs/design.md §4a; a test checks it). What still differs there is the
  initial state only: the zero query (uniform attention at init) and the untied zero decoder.
- ``alpha_in`` multiplies the *normalised* embeddings: post-LN normalises the embedding sum, so a
  multiplier before that norm would be a no-op.
- With ``scored_logits_only`` the head runs only at scored positions (docs/design.md §8): ``logits`` is
  (num_scored, V); by default (B, n, V) as in HF.
- Attention is computed eagerly (scores materialised) so the coordinate-check taps see the logits.
- ``pre_layer_norm=True`` (docs/design.md §6 leaves the choice open; post-LN is the default) gives
  pre-LN blocks, x + Attn(LN(x)) then x + FFN(LN(x)), as GPT-2 / nanoGPT / Megatron-BERT: the
  embedding sum enters the residual stream un-normalised (``alpha_in`` multiplies it) and one final
  LayerNorm sits before the MLM head. That moves the embedding LayerNorm to the end, so the
  parameter count is the post-LN one. Under SP it is HF ``MegatronBertForMaskedLM`` (``from_hf_bert``
  takes either).
- Training hooks (docs/design.md §8): :meth:`TransformerEncoder.enable_activation_checkpointing`
  recomputes each layer application in backward; :meth:`TransformerEncoder.compile_regions` compiles
  the layer module(s) rather than the whole model.
- Task models (docs/design.md §9), as HF's: :class:`ProbformerBertForTokenClassification` puts dropout
  and a classifier on every position's final hidden state; :class:`ProbformerBertForSequenceClassification`
  reads the first position (a ``[CLS]`` token the data layer prepends) through a pooler (dense N x N +
  tanh, a hidden matrix) and then dropout and a classifier. The classifier has the decoder's role
  (output): its init std is the decoder's (SP: ``init_std``, HF's; muP: ``init_std_output``, 0 = zeros,
  also when ``from_pretrained`` adds it to an MLM checkpoint) and it reads ``alpha_out / m`` times its
  input. Dropout is ``classifier_dropout``, else ``hidden_dropout`` (HF).

:class:`TransformerEncoder` holds everything but the read-out (``build_head``) and the encoder stack
(``build_stack``): :class:`BertStack` here, one shared layer in :mod:`probformer.models.ut.modeling_ut`.
Every head keeps the MLM model's parameter names, so an MLM checkpoint loads into a task model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput, SequenceClassifierOutput, TokenClassifierOutput

from probformer.models.bert.configuration_bert import ProbformerBertConfig
from probformer.models.mlm_readout import mlm_readout
from probformer.models.task_heads import classifier_linear, sequence_classification_loss, token_classification_loss
from probformer.parametrization import Role, tag

TAP_NAMES = ("attention_logits", "attention_output", "ffn_output", "layer_output")


def hidden_linear(fan_in: int, fan_out: int) -> nn.Linear:
    return tag(nn.Linear(fan_in, fan_out), weight=Role.HIDDEN, bias=Role.VECTOR)


def layer_norm(config: ProbformerBertConfig) -> nn.LayerNorm:
    return tag(nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps), weight=Role.VECTOR, bias=Role.VECTOR)


class BertEmbeddings(nn.Module):
    """word + token type (segment A) + learned absolute position, then LayerNorm (post-LN only) and dropout."""

    def __init__(self, config: ProbformerBertConfig):
        super().__init__()
        N = config.hidden_size
        self.word = tag(nn.Embedding(config.vocab_size, N, padding_idx=config.pad_token_id), weight=Role.INPUT)
        self.position = tag(nn.Embedding(config.max_position_embeddings, N), weight=Role.INPUT)
        self.token_type = tag(nn.Embedding(1, N), weight=Role.INPUT)
        # Pre-LN normalises at every sublayer input and once before the head, so the stream starts raw.
        self.norm = None if config.pre_layer_norm else layer_norm(config)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        n = input_ids.shape[1]
        if n > self.position.num_embeddings:
            raise ValueError(f"sequence length {n} exceeds max_position_embeddings={self.position.num_embeddings}")
        e = self.word(input_ids) + self.token_type.weight[0] + self.position.weight[:n]  # (B, n, N), HF's order
        return self.dropout(e if self.norm is None else self.norm(e))


class BertLayer(nn.Module):
    """One encoder layer, also UT's shared layer. Post-LN (HF BERT): h = LN(x + Attn(x)),
    out = LN(h + FFN(h)); pre-LN: h = x + Attn(LN(x)), out = h + FFN(LN(h)). The two norms keep
    their names in both (attn_norm before / after attention, ffn_norm before / after the FFN)."""

    def __init__(self, config: ProbformerBertConfig):
        super().__init__()
        N, I = config.hidden_size, config.intermediate_size
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.pre_layer_norm = config.pre_layer_norm
        self.query, self.key, self.value = hidden_linear(N, N), hidden_linear(N, N), hidden_linear(N, N)
        self.attn_out = hidden_linear(N, N)
        self.attn_norm = layer_norm(config)
        self.ffn_in = hidden_linear(N, I)
        # fan-in I, not N: muP's own width multiplier I/I0 (probformer.parametrization)
        self.ffn_out = tag(nn.Linear(I, N), weight=Role.FFN, bias=Role.VECTOR)
        self.ffn_norm = layer_norm(config)
        self.attn_dropout = nn.Dropout(config.attention_dropout)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None,
        attention_scale: float,
        taps: nn.ModuleDict,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, n, N); key_mask (B, n) bool, False = padding. Returns the layer output and the
        attention probabilities (B, H, n, n)."""
        if self.pre_layer_norm:
            attn, probs = self.attention(self.attn_norm(x), key_mask, attention_scale, taps)
            h = x + attn
            out = h + self.feed_forward(self.ffn_norm(h), taps)
        else:
            attn, probs = self.attention(x, key_mask, attention_scale, taps)
            h = self.attn_norm(x + attn)
            out = self.ffn_norm(h + self.feed_forward(h, taps))
        return taps["layer_output"](out), probs

    def attention(
        self, x: torch.Tensor, key_mask: torch.Tensor | None, attention_scale: float, taps: nn.ModuleDict
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention sublayer's residual branch (after output dropout) and its probabilities."""
        bsz, n, N = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(bsz, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, n, d)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        logits = taps["attention_logits"]((q @ k.transpose(-1, -2)) * attention_scale)  # (B, H, n, n)
        if key_mask is not None:
            logits = logits.masked_fill(~key_mask[:, None, None, :], torch.finfo(logits.dtype).min)
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32).to(v.dtype)  # fp32 even under autocast
        ctx = (self.attn_dropout(probs) @ v).transpose(1, 2).reshape(bsz, n, N)  # (B, n, N)
        return self.dropout(taps["attention_output"](self.attn_out(ctx))), probs

    def feed_forward(self, x: torch.Tensor, taps: nn.ModuleDict) -> torch.Tensor:
        """The FFN sublayer's residual branch (after dropout); exact (erf) GELU, as HF "gelu"."""
        return self.dropout(taps["ffn_output"](self.ffn_out(F.gelu(self.ffn_in(x)))))


class MLMHeadTransform(nn.Module):
    """HF's prediction-head transform: dense (a hidden matrix) + GELU + LayerNorm, before the decoder."""

    def __init__(self, config: ProbformerBertConfig):
        super().__init__()
        self.dense = hidden_linear(config.hidden_size, config.hidden_size)
        self.norm = layer_norm(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.gelu(self.dense(x)))


class TransformerEncoder(PreTrainedModel):
    """Embeddings, the step loop, init and training hooks shared by BERT and UT and by every head.

    Subclasses give ``build_head`` (the read-out: MLM, token or sequence) and ``build_stack`` (the
    layers: BERT's L, UT's one) and say which layer runs at step t. The head is registered before the
    taps and the stack: registration order is init order (one RNG stream), the order of the MLM
    models before the task heads existed."""

    config_class = ProbformerBertConfig
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = False

    def __init__(self, config: ProbformerBertConfig):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)  # registered first: a tied weight keeps the INPUT role
        self.final_norm = layer_norm(config) if config.pre_layer_norm else None  # pre-LN: before the head
        self.build_head(config)
        # Distinct identity taps per step so activation hooks (coordinate check) see every call.
        self.taps = nn.ModuleList(
            nn.ModuleDict({name: nn.Identity() for name in TAP_NAMES}) for _ in range(config.num_layers)
        )
        self.embeddings_tap = nn.Identity()
        self.logits_tap = nn.Identity()
        self._checkpoint_layers = False  # enable_activation_checkpointing()
        self.build_stack(config)
        self.post_init()

    def build_head(self, config: ProbformerBertConfig) -> None:
        """Register the read-out's modules."""
        raise NotImplementedError

    def build_stack(self, config: ProbformerBertConfig) -> None:
        """Register the encoder layers."""
        raise NotImplementedError

    # Subclasses say which layer runs at step t: BERT its own layer t, UT the one shared layer.
    layer_at: Callable[[int], BertLayer]

    def output_layer(self) -> nn.Linear:
        """The read-out matrix with the output role (the MLM decoder, a task classifier)."""
        raise NotImplementedError

    def distinct_layers(self) -> list[BertLayer]:
        """The layer modules the steps run, each once (BERT: L of them; UT: the shared one)."""
        layers: dict[int, BertLayer] = {}
        for t in range(self.config.num_layers):
            layers.setdefault(id(self.layer_at(t)), self.layer_at(t))
        return list(layers.values())

    def enable_activation_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each step's layer in the backward pass instead of storing its activations
        (training only): activation memory drops from L layers' worth to one layer's plus the L
        layer inputs. Dropout masks are replayed (checkpoint restores the RNG state), so values and
        gradients are those of the plain model."""
        self._checkpoint_layers = enabled

    def compile_regions(self, **compile_kwargs) -> None:
        """Regional compilation: ``torch.compile`` each distinct layer module in place
        (``nn.Module.compile``; parameter names and ``state_dict`` keys are unchanged), not the
        whole model. UT compiles its one shared layer, so compile time does not grow with T; BERT's
        layers share one code object and shape, so dynamo compiles the first and reuses the graph.
        Embeddings, the loop and the head stay eager: they are a few ops each."""
        for layer in self.distinct_layers():
            layer.compile(**compile_kwargs)

    def step_input(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """What the layer at ``step`` reads (BERT: the previous output; UT adds a timestep vector)."""
        return x

    def final(self, x: torch.Tensor) -> torch.Tensor:
        """What the head reads: the last step's output, through the final LayerNorm under pre-LN."""
        return x if self.final_norm is None else self.final_norm(x)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # HF BERT's init with the stds from scales(). transformers only calls this on modules that own
        # parameters (the leaves here), so the read-out and the query projections are found by identity.
        sc = self.config.scales()
        if isinstance(module, nn.Embedding):  # word, position, token type (UT: timestep)
            nn.init.normal_(module.weight, std=sc.init_std)
            pad = module.padding_idx
            if pad is not None and not getattr(module.weight, "_is_hf_initialized", False):
                module.weight[pad].zero_()  # HF zeroes the pad row (a loaded weight keeps its own)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            # The output role (decoder, classifier; docs/design.md §4, 9). Under SP a tied decoder is
            # replaced by the word embeddings right after.
            if module is self.output_layer():
                std = sc.init_output
            elif sc.zero_query and any(module is self.layer_at(t).query for t in range(self.config.num_layers)):
                std = 0.0
            elif any(module is self.layer_at(t).ffn_out for t in range(self.config.num_layers)):
                std = sc.ffn_init
            else:
                std = sc.hidden_init
            if std > 0:
                nn.init.normal_(module.weight, std=std)
            else:
                nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """The last step's output (B, n, N; before the final LayerNorm under pre-LN), the embeddings
        and every step's output, and (when asked for) every step's attention probabilities."""
        sc = self.config.scales()
        key_mask = attention_mask.to(torch.bool) if attention_mask is not None else None
        x = self.embeddings_tap(sc.input * self.embeddings(input_ids))  # (B, n, N)
        states, attentions = [x], []
        checkpointed = self._checkpoint_layers and self.training and torch.is_grad_enabled()
        for t in range(self.config.num_layers):
            args = (self.step_input(x, t), key_mask, sc.attention, self.taps[t])
            if checkpointed:
                x, probs = checkpoint(self.layer_at(t), *args, use_reentrant=False)
            else:
                x, probs = self.layer_at(t)(*args)
            states.append(x)
            if output_attentions:
                attentions.append(probs.detach())
        return x, states, attentions

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        """The output-role read-out of (already pooled / transformed) states: W (alpha_out / m) h + b."""
        return self.logits_tap(self.output_layer()(self.config.scales().output * h))


class MLMEncoder(TransformerEncoder):
    """The MLM read-out: HF's prediction-head transform, then the decoder (tied to the word embeddings
    under SP)."""

    # Only consulted when config.tie_word_embeddings, i.e. under SP.
    _tied_weights_keys: ClassVar[dict[str, str]] = {"decoder.weight": "embeddings.word.weight"}

    def build_head(self, config: ProbformerBertConfig) -> None:
        self.head = MLMHeadTransform(config)
        self.decoder = tag(nn.Linear(config.hidden_size, config.vocab_size), weight=Role.OUTPUT, bias=Role.VECTOR)

    def output_layer(self) -> nn.Linear:
        return self.decoder

    def get_output_embeddings(self) -> nn.Linear:
        return self.decoder

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
        scored_logits_only: bool = False,
        **kwargs,
    ) -> MaskedLMOutput:
        """MLM forward. ``labels`` uses -100 for unscored positions.

        ``logits`` are (B, n, vocab), as from HF ``BertForMaskedLM``; with ``scored_logits_only``
        (the trainer) the head runs only at scored positions and ``logits`` is (num_scored, vocab).
        ``hidden_states``: embeddings then every step's output (under pre-LN before the final LayerNorm).
        """
        x, states, attentions = self.encode(input_ids, attention_mask, output_attentions)
        logits, loss = mlm_readout(lambda h: self.readout(self.head(self.final(h))), x, labels, scored_logits_only)
        return MaskedLMOutput(
            loss=loss,
            logits=logits,
            hidden_states=tuple(states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


def classifier_dropout(config: ProbformerBertConfig) -> nn.Dropout:
    """HF's task-head dropout: ``classifier_dropout``, else ``hidden_dropout``."""
    p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout
    return nn.Dropout(p)


# An MLM checkpoint's head: dropped when it loads into a task model (docs/design.md §9).
_MLM_HEAD_KEYS = (r"^head\.", r"^decoder\.")


class TokenClassificationEncoder(TransformerEncoder):
    """A tag per position: dropout, then the classifier on each final hidden state (HF)."""

    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = list(_MLM_HEAD_KEYS)

    def build_head(self, config: ProbformerBertConfig) -> None:
        self.num_labels = config.num_labels
        self.dropout = classifier_dropout(config)
        self.classifier = classifier_linear(config)

    def output_layer(self) -> nn.Linear:
        return self.classifier

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
        **kwargs,
    ) -> TokenClassifierOutput:
        """``logits`` (B, n, num_labels); ``loss`` the mean cross-entropy over labels != -100."""
        x, states, attentions = self.encode(input_ids, attention_mask, output_attentions)
        logits = self.readout(self.dropout(self.final(x)))
        return TokenClassifierOutput(
            loss=token_classification_loss(logits, labels),
            logits=logits,
            hidden_states=tuple(states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


class SequenceClassificationEncoder(TransformerEncoder):
    """A label per sequence from its first position (the ``[CLS]`` token): pooler = dense + tanh (a
    hidden matrix), dropout, then the classifier (HF)."""

    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = list(_MLM_HEAD_KEYS)

    def build_head(self, config: ProbformerBertConfig) -> None:
        self.num_labels = config.num_labels
        self.pooler = hidden_linear(config.hidden_size, config.hidden_size)
        self.dropout = classifier_dropout(config)
        self.classifier = classifier_linear(config)

    def output_layer(self) -> nn.Linear:
        return self.classifier

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
        **kwargs,
    ) -> SequenceClassifierOutput:
        """``logits`` (B, num_labels); ``loss`` as HF's sequence classifiers (``config.problem_type``)."""
        x, states, attentions = self.encode(input_ids, attention_mask, output_attentions)
        pooled = torch.tanh(self.pooler(self.final(x)[:, 0]))  # the [CLS] position's final state
        logits = self.readout(self.dropout(pooled))
        return SequenceClassifierOutput(
            loss=sequence_classification_loss(logits, labels, self.config),
            logits=logits,
            hidden_states=tuple(states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


# HF parameter names -> ours (token_type is sliced to segment A separately). BertForMaskedLM is
# post-LN; MegatronBertForMaskedLM is the pre-LN BERT (no embedding LayerNorm, a final one).
_HF_SHARED_RENAMES = (
    (r"^bert\.embeddings\.word_embeddings\.", "embeddings.word."),
    (r"^bert\.embeddings\.position_embeddings\.", "embeddings.position."),
    (r"^bert\.embeddings\.token_type_embeddings\.", "embeddings.token_type."),
    (r"^bert\.encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.", r"layers.\1.\2."),
    (r"^bert\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.attn_out."),
    (r"^bert\.encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.ffn_in."),
    (r"^bert\.encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.ffn_out."),
    (r"^cls\.predictions\.transform\.dense\.", "head.dense."),
    (r"^cls\.predictions\.transform\.LayerNorm\.", "head.norm."),
    (r"^cls\.predictions\.decoder\.", "decoder."),
    (r"^cls\.predictions\.bias$", "decoder.bias"),
)
_HF_NORM_RENAMES = {
    "bert": (
        (r"^bert\.embeddings\.LayerNorm\.", "embeddings.norm."),
        (r"^bert\.encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"layers.\1.attn_norm."),
        (r"^bert\.encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"layers.\1.ffn_norm."),
    ),
    "megatron-bert": (
        (r"^bert\.encoder\.layer\.(\d+)\.attention\.ln\.", r"layers.\1.attn_norm."),
        (r"^bert\.encoder\.layer\.(\d+)\.ln\.", r"layers.\1.ffn_norm."),
        (r"^bert\.encoder\.ln\.", "final_norm."),
    ),
}


def convert_hf_state_dict(state_dict: dict[str, torch.Tensor], model_type: str = "bert") -> dict[str, torch.Tensor]:
    """A HF ``BertForMaskedLM`` (``model_type="bert"``) or ``MegatronBertForMaskedLM``
    (``"megatron-bert"``) state dict in our names. Raises on a key we do not know."""
    if model_type not in _HF_NORM_RENAMES:
        raise ValueError(f"model_type must be one of {sorted(_HF_NORM_RENAMES)}, got {model_type!r}")
    renames = _HF_SHARED_RENAMES + _HF_NORM_RENAMES[model_type]
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for pattern, repl in renames:
            new, hits = re.subn(pattern, repl, key)
            if hits:
                break
        else:
            raise KeyError(f"no mapping for HF parameter {key!r}")
        out[new] = value[:1] if new == "embeddings.token_type.weight" else value  # segment A only
    return out


class BertStack:
    """BERT's encoder stack: ``num_layers`` layers of their own (mixed into a :class:`TransformerEncoder`)."""

    def build_stack(self, config: ProbformerBertConfig) -> None:
        self.layers = nn.ModuleList(BertLayer(config) for _ in range(config.num_layers))

    def layer_at(self, step: int) -> BertLayer:
        return self.layers[step]


class ProbformerBertForTokenClassification(BertStack, TokenClassificationEncoder):
    pass


class ProbformerBertForSequenceClassification(BertStack, SequenceClassificationEncoder):
    pass


class ProbformerBertForMaskedLM(BertStack, MLMEncoder):
    @classmethod
    def from_hf_bert(cls, hf_model: nn.Module) -> ProbformerBertForMaskedLM:
        """Our SP model holding a HF ``BertForMaskedLM``'s weights, or with ``pre_layer_norm`` a HF
        ``MegatronBertForMaskedLM``'s (the pre-LN BERT): the same logits (test references)."""
        hc = hf_model.config
        if hc.model_type not in _HF_NORM_RENAMES:
            raise ValueError(f"expected a HF BERT or Megatron-BERT model, got model_type {hc.model_type!r}")
        if hc.hidden_act != "gelu":
            raise ValueError(f"hidden_act must be 'gelu' (exact GELU) to match, got {hc.hidden_act!r}")
        config = ProbformerBertConfig(
            vocab_size=hc.vocab_size,
            hidden_size=hc.hidden_size,
            num_layers=hc.num_hidden_layers,
            num_heads=hc.num_attention_heads,
            intermediate_size=hc.intermediate_size,
            max_position_embeddings=hc.max_position_embeddings,
            hidden_dropout=hc.hidden_dropout_prob,
            attention_dropout=hc.attention_probs_dropout_prob,
            layer_norm_eps=hc.layer_norm_eps,
            pre_layer_norm=hc.model_type == "megatron-bert",
            parametrization="sp",
            init_std=hc.initializer_range,
            pad_token_id=hc.pad_token_id if hc.pad_token_id is not None else 0,
        )
        model = cls(config)
        model.load_state_dict(convert_hf_state_dict(hf_model.state_dict(), hc.model_type), strict=True)
        return model.train(hf_model.training)
