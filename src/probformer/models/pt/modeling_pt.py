"""The Probabilistic Transformer: PTForMaskedLM, and its token and sequence classifiers.

How it differs from a transformer encoder (docs/design.md §1-3):
- The hidden state of token i is a distribution over N discrete label values; the forward pass is
  mean-field variational inference (MFVI) in a CRF, T iterations with *shared* parameters.
- "Attention" is the posterior over the head H_i^c of token i in channel c; its logits come from
  ternary factors T_ck = U_ck V_ck^T (k: directed distance bucket), and the values it mixes are the
  messages that factor sends back, in *both* directions (i as child, i as head).
- Position enters only through the distance buckets (optionally an absolute unary term P).
- The FFN analogue is the binary factor B[G_i, Z_i] with latent G_i (off: the 2023 model).
- There are no norms and no residual stream: each iteration rebuilds s_i = S[w_i] + messages.

Equations implemented (docs/design.md §2, scaled coordinates q = N Q): per iteration, from the same q,
  qry = q U_ck, key = q V_ck;  e[c,i,j] = (alpha_H/r) <qry[i], key[j]>;  a = softmax_j(e / lambda_H)
  g = M softmax(alpha_G B q / lambda_G);  m_i = sum a U key (child) + sum a^T V qry (head)
  s = dropout(alpha_in S[w] + m + B^T g);  read-out y = (alpha_out/m) W s + b at masked positions.
Width-dependent multipliers come from :mod:`probformer.parametrization` (docs/design.md §4a), and so
does lambda_H at this width: the config's under head paradigm 2, x N/N0 under paradigm 1 (§5).

ROOT and task heads (docs/design.md §9; :mod:`.root`): with ``use_root`` a ROOT variable Z_0 joins the
model, a candidate head of every word with its own root-bucket factors; its final label logits s_0
are the sentence representation. :class:`PTEncoder` is everything but a head (the MFVI inference);
:class:`PTForMaskedLM`, :class:`PTForTokenClassification` and :class:`PTForSequenceClassification`
add one read-out each, y = (alpha_out/m) W s + b, on words (MLM, tokens) or on ROOT (sentences).
Parameter names are the same in all three, so an MLM checkpoint loads into a task model with
``from_pretrained`` (the MLM read-out is dropped, the task read-out starts at zero).

Outputs: ``attentions`` are the word-to-word head marginals (B, h, n, n) per iteration, as without
ROOT; with ROOT, ``root_attentions`` are P(H_i^c = ROOT) (B, h, n) per iteration (a word's row of
``attentions`` plus its ``root_attentions`` entry sums to 1), and ``root_hidden_states`` are ROOT's
label logits (B, N) after each iteration.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput, SequenceClassifierOutput, TokenClassifierOutput

from probformer.models.mlm_readout import mlm_readout
from probformer.models.pt.bucket_kernels import BucketKernel, bucket_index, build_kernel  # noqa: F401 (re-export)
from probformer.models.pt.configuration_pt import PTConfig
from probformer.models.pt.root import RootFactors, RootTerms
from probformer.models.task_heads import classifier_linear, sequence_classification_loss, token_classification_loss
from probformer.parametrization import Role, pt_ternary_role, tag

TAP_NAMES = ("q", "head_logits", "messages", "latent", "labels")
ROOT_TAP_NAMES = ("root_labels",)  # ROOT's label logits s_0, tapped per iteration only with use_root
_NO_TAPS = {name: (lambda x: x) for name in TAP_NAMES + ROOT_TAP_NAMES}


def matmul_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the matmuls that consume ``x`` run in: autocast's (bf16) where it is on for x's
    device, else x's own (so without autocast every cast to it is a no-op)."""
    device_type = x.device.type
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype


class TernaryFactors(nn.Module):
    """U, V in R^{K x h x N x r}: T_ck = U_ck V_ck^T per directed bucket k and channel c."""

    def __init__(self, num_buckets: int, num_channels: int, hidden_size: int, rank: int, role: Role = Role.HIDDEN):
        super().__init__()
        self.U = nn.Parameter(torch.empty(num_buckets, num_channels, hidden_size, rank))
        self.V = nn.Parameter(torch.empty(num_buckets, num_channels, hidden_size, rank))
        tag(self, U=role, V=role)  # hidden; lowrank under head paradigm 1 (parametrization module doc)

    def frobenius_norm(self) -> torch.Tensor:
        """sum_ck ||U_ck V_ck^T||_F (2023 regulariser, not squared) without building T:
        ||U V^T||_F^2 = trace((U^T U)(V^T V))."""
        utu = self.U.transpose(-1, -2) @ self.U
        vtv = self.V.transpose(-1, -2) @ self.V
        sq = (utu * vtv.transpose(-1, -2)).sum(dim=(-1, -2))
        return sq.clamp_min(1e-30).sqrt().sum()


class LatentFactor(nn.Module):
    """B in R^{M x N}: the binary factor B[G_i, Z_i]."""

    def __init__(self, latent_size: int, hidden_size: int):
        super().__init__()
        self.B = nn.Parameter(torch.empty(latent_size, hidden_size))
        tag(self, B=Role.HIDDEN)


# -- outputs: HF's, plus ROOT's states and head marginals ---------------------------------------------
@dataclass
class PTMaskedLMOutput(MaskedLMOutput):
    root_hidden_states: tuple[torch.Tensor, ...] | None = None  # ROOT's label logits s_0 (B, N) per iteration
    root_attentions: tuple[torch.Tensor, ...] | None = None  # P(H_i^c = ROOT) (B, h, n) per iteration


@dataclass
class PTTokenClassifierOutput(TokenClassifierOutput):
    root_hidden_states: tuple[torch.Tensor, ...] | None = None
    root_attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class PTSequenceClassifierOutput(SequenceClassifierOutput):
    root_hidden_states: tuple[torch.Tensor, ...] | None = None
    root_attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class PTInference:
    """What T MFVI iterations leave: the final label logits of the words (B, n, N) and of ROOT (B, N;
    None without ROOT), every iteration's, and (when asked for) the head marginals split into the
    word-to-word part (B, h, n, n) and ROOT's column (B, h, n)."""

    labels: torch.Tensor
    root_labels: torch.Tensor | None = None
    states: list[torch.Tensor] = field(default_factory=list)
    root_states: list[torch.Tensor] = field(default_factory=list)
    marginals: list[torch.Tensor] = field(default_factory=list)
    root_marginals: list[torch.Tensor] = field(default_factory=list)

    def outputs(self, output_hidden_states: bool, output_attentions: bool) -> dict[str, tuple | None]:
        """The optional fields of a PT output (ROOT's are None without ROOT)."""
        def pick(values: list[torch.Tensor], wanted: bool) -> tuple[torch.Tensor, ...] | None:
            return tuple(values) if wanted and values else None

        return dict(hidden_states=pick(self.states, output_hidden_states),
                    attentions=pick(self.marginals, output_attentions),
                    root_hidden_states=pick(self.root_states, output_hidden_states),
                    root_attentions=pick(self.root_marginals, output_attentions))


class PTPreTrainedModel(PreTrainedModel):
    config_class = PTConfig
    base_model_prefix = "pt"
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        # Stored weights are width-independent at the base width (docs/design.md §4a); scales() holds stds.
        sc = self.config.scales()
        if isinstance(module, TernaryFactors):
            nn.init.normal_(module.U, std=sc.init_ternary)
            nn.init.normal_(module.V, std=sc.init_ternary)
        elif isinstance(module, RootFactors):  # rho is a row of S, U^R and V^R are U and V (docs/design.md §9)
            nn.init.normal_(module.rho, std=sc.init_input)
            nn.init.normal_(module.U, std=sc.init_ternary)
            nn.init.normal_(module.V, std=sc.init_ternary)
        elif isinstance(module, LatentFactor):
            nn.init.normal_(module.B, std=sc.init_latent)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=sc.init_input)
        elif isinstance(module, nn.Linear):
            # A task read-out starts at zero (docs/design.md §9), also when it is added to an MLM
            # checkpoint by from_pretrained; the MLM read-out's std is init_std_output (0: zero).
            std = 0.0 if module is getattr(self, "classifier", None) else sc.init_output
            if std > 0:
                nn.init.normal_(module.weight, std=std)
            else:
                nn.init.zeros_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class PTEncoder(PTPreTrainedModel):
    """The MFVI inference of docs/design.md §1-2 (and ROOT, §9) without a read-out: unary S (and P),
    ternary U, V, latent B, ROOT; subclasses add their read-out, then call ``post_init``."""

    def __init__(self, config: PTConfig):
        super().__init__(config)
        c = config
        # Registration order is init order (one RNG stream): S, P, U V, B, ROOT, then the subclass's head.
        self.unary = tag(nn.Embedding(c.vocab_size, c.hidden_size), weight=Role.INPUT)  # S
        self.position = (
            tag(nn.Embedding(c.max_position_embeddings, c.hidden_size), weight=Role.INPUT)
            if c.use_position_unary else None
        )  # P
        ternary_role = pt_ternary_role(c.head_paradigm)
        self.ternary = TernaryFactors(c.num_buckets, c.num_channels, c.hidden_size, c.rank, ternary_role)
        self.latent = LatentFactor(c.latent_size, c.hidden_size) if c.use_latent_factor else None
        self.root = (RootFactors(c.num_channels, c.hidden_size, c.rank, ternary_role)
                     if c.use_root else None)  # rho, U^R, V^R
        self.head_dropout = nn.Dropout(c.head_dropout)
        self.label_dropout = nn.Dropout(c.label_dropout)
        # Distinct identity taps per iteration so activation hooks (coordinate check) see every call.
        tap_names = TAP_NAMES + (ROOT_TAP_NAMES if c.use_root else ())
        self.taps = nn.ModuleList(
            nn.ModuleDict({name: nn.Identity() for name in tap_names}) for _ in range(c.num_iterations)
        )
        self.logits_tap = nn.Identity()
        self._compiled_iteration = None  # compile_regions()
        self._checkpoint_iterations = False  # enable_activation_checkpointing()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.unary

    def ternary_norm(self) -> torch.Tensor:
        """The 2023 regulariser sum ||U V^T||_F over every bucket, the root bucket included."""
        norm = self.ternary.frobenius_norm()
        return norm if self.root is None else norm + self.root.frobenius_norm()

    def enable_activation_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each MFVI iteration in the backward pass instead of storing its activations
        (training only): activation memory drops from T iterations' worth to one plus T states."""
        self._checkpoint_iterations = enabled

    def compile_regions(self, **compile_kwargs) -> None:
        """Regional compilation: compile ONE MFVI iteration and call it T times (compiling the
        unrolled loop makes compile time grow with T). Activation taps are skipped while compiled
        (they are per-iteration modules, and a guard on them would recompile every iteration).

        Each model compiles its own copy of the iteration's code: dynamo keeps graphs and guards per
        code object, so models sharing one would share a recompile budget, and two of them with
        different kernels crash torch 2.11-2.13 while it explains the recompile (it evaluates the
        first kernel's guard sources, e.g. ``kernel.masks``, on the other; pytorch/pytorch#184793)."""
        method = type(self)._iteration
        own = types.FunctionType(method.__code__.replace(), method.__globals__, method.__name__,
                                 method.__defaults__, method.__closure__)
        self._compiled_iteration = torch.compile(types.MethodType(own, self), **compile_kwargs)

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Run T MFVI iterations. Returns final label logits s (B, n, N), per-iteration s and head
        marginals (B, h, n, n); :meth:`mfvi` also returns ROOT's."""
        inference = self.mfvi(input_ids, attention_mask, output_attentions)
        return inference.labels, inference.states, inference.marginals

    def _root_terms(self) -> RootTerms | None:
        """ROOT's effective weights for this forward: alpha_in rho and U^R, V^R times U, V's multiplier."""
        if self.root is None:
            return None
        sc = self.config.scales()
        return RootTerms(sc.input * self.root.rho, sc.ternary * self.root.U, sc.ternary * self.root.V)

    def mfvi(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> PTInference:
        """Run T MFVI iterations (docs/design.md §2; with ROOT §9)."""
        c = self.config
        sc = c.scales()
        n = input_ids.shape[1]
        valid = (torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None
                 else attention_mask.to(torch.bool))  # (B, n)
        eye = torch.eye(n, dtype=torch.bool, device=input_ids.device)
        allowed = (valid[:, :, None] & valid[:, None, :] & ~eye)[:, None]  # (B, 1, n_i, n_j): candidate heads j of i
        kernel = build_kernel(c.mfvi_kernel, n, c.max_distance, input_ids.device)

        unary = sc.input * self.unary(input_ids)  # (B, n, N)
        if self.position is not None:
            unary = unary + sc.input * self.position.weight[:n]
        # Effective U, V (K, h, N, r), laid out once for all T iterations.
        weights = kernel.weights(sc.ternary * self.ternary.U, sc.ternary * self.ternary.V)
        B = sc.latent * self.latent.B if self.latent is not None else None  # (M, N)
        row_valid = valid[..., None].to(unary.dtype)
        root = self._root_terms()
        s_root = None
        if root is not None:
            # ROOT is column 0 of the head choices, a candidate head of every real word (docs/design.md §9).
            allowed = torch.cat([valid[:, None, :, None], allowed], dim=-1)  # (B, 1, n, 1 + n)
            s_root = root.unary.expand(input_ids.shape[0], -1)  # s_0 starts at alpha_in rho, (B, N)

        iteration = self._compiled_iteration or self._iteration
        checkpointed = self._checkpoint_iterations and self.training and torch.is_grad_enabled()
        s = unary
        inference = PTInference(labels=s, root_labels=s_root)
        for t in range(c.num_iterations):
            taps = _NO_TAPS if self._compiled_iteration is not None else self.taps[t]
            if checkpointed:
                s, a, s_root = checkpoint(iteration, s, unary, weights, B, allowed, row_valid, kernel, taps,
                                          s_root, root, use_reentrant=False)
            else:
                s, a, s_root = iteration(s, unary, weights, B, allowed, row_valid, kernel, taps, s_root, root)
            inference.states.append(s)
            if s_root is not None:
                inference.root_states.append(s_root)
            if output_attentions:
                inference.marginals.append(a.detach() if root is None else a[..., 1:].detach().contiguous())
                if root is not None:
                    inference.root_marginals.append(a[..., 0].detach().contiguous())
        inference.labels, inference.root_labels = s, s_root
        return inference

    def _iteration(self, s, unary, weights, B, allowed, row_valid, kernel: BucketKernel, taps, s_root=None,
                   root: RootTerms | None = None):
        """One MFVI iteration, docs/design.md §2 (asynchronous schedule: heads, latents, then labels, all
        from the same q). Returns the new label logits s (B, n, N), head marginals a (B, h, n, n) and
        ROOT's new label logits (None without ROOT). With ROOT (§9; ``s_root`` (B, N) and ``root``) its
        column is column 0 of ``allowed`` and of ``a`` (B, h, n, 1 + n), its terms added beside the
        kernel's."""
        c = self.config
        sc = c.scales()
        N, M = c.hidden_size, c.latent_size
        acc = torch.promote_types(unary.dtype, torch.float32)  # softmaxes in >= fp32 under autocast
        # q = N * Q(Z): Theta(1) coordinates at any width (docs/design.md §2); pad rows are 0.
        q = taps["q"](N * torch.softmax(s.to(acc) / c.label_temperature, dim=-1).to(s.dtype) * row_valid)
        qry, key = kernel.project(q, weights)  # K x (B, h, n, r) each: qry = q U_ck, key = q V_ck
        e = sc.head_logit * kernel.scores(qry, key)  # (B, h, n, n)
        if root is not None:  # ROOT's head logit joins every word's softmax over heads (docs/design.md §9)
            q_root = N * torch.softmax(s_root.to(acc) / c.label_temperature, dim=-1).to(s_root.dtype)  # (B, N)
            qry_r, key_r = root.project(q, q_root)
            e = torch.cat([sc.head_logit * root.scores(qry_r, key_r), e], dim=-1)  # (B, h, n, 1 + n)
        # The head softmax's logits e / lambda_H, lambda_H at this width (paradigm 1: x N/N0, docs/design.md
        # §5; parametrization.pt_head_temperature); the tap sees them before the mask, as it saw e (lambda_H = 1).
        logits_h = taps["head_logits"](e.to(acc) / sc.head_temperature).masked_fill(~allowed, torch.finfo(acc).min)
        a = torch.softmax(logits_h, dim=-1) * allowed  # rows with no candidate head are 0
        # The marginals leave the fp32 softmax in the matmul dtype (bf16 under autocast), once, before
        # dropout: every kernel's messages are matmuls of a (or of its masked copies / diagonals), which
        # autocast would otherwise cast from fp32 once per product, and the near buckets' elementwise
        # products (fp32 a x bf16 key -> fp32) promoted the stacked contexts to fp32 before one more cast.
        # The matmuls saw bf16-rounded a before too. Measured at the default model under CPU bf16 autocast
        # (1.35M, batch 32 x 128, 1 thread; benchmarks/throughput.py --profile pt-banded@bf16): casts per
        # training step 178M -> 58M elements (banded; fast 175M -> 55M), step CPU time -10% (fast -12%).
        # Without autocast matmul_dtype(s) is s.dtype, as before: fp32 / fp64 results are unchanged.
        a_msg = self.head_dropout(a.to(matmul_dtype(s)))
        m = kernel.messages(a_msg if root is None else a_msg[..., 1:], qry, key, weights)  # both directions
        if root is not None:  # i as ROOT's child; ROOT as the head of every word
            m_child, m_root = root.messages(a_msg[..., 0], qry_r, key_r)
            m = m + m_child
        if B is not None:
            g_logits = sc.latent_logit * (q @ B.t())  # (B, n, M)
            g = M * torch.softmax(g_logits.to(acc) / c.latent_temperature, dim=-1).to(s.dtype)
            m = m + taps["latent"](g * row_valid) @ B
        m = taps["messages"](m)
        s = taps["labels"](self.label_dropout(unary + m))
        if root is not None:  # s_0 = alpha_in rho + m_0: no latent G for ROOT (docs/design.md §9)
            s_root = taps["root_labels"](self.label_dropout(root.unary + m_root))
        return s, a, s_root


class PTForMaskedLM(PTEncoder):
    def __init__(self, config: PTConfig):
        super().__init__(config)
        self.readout = tag(nn.Linear(config.hidden_size, config.vocab_size), weight=Role.OUTPUT,
                           bias=Role.VECTOR)  # W, b
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.readout

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
    ) -> PTMaskedLMOutput:
        """MLM forward. ``labels`` uses -100 for unscored positions; ROOT (if any) is never scored.

        ``logits`` are (B, n, vocab), as from HF ``BertForMaskedLM``; with ``scored_logits_only``
        (the trainer) the read-out runs only where ``labels`` are scored and ``logits`` is
        (num_scored, vocab) (docs/design.md §8; :mod:`probformer.models.mlm_readout`).
        ``attentions`` are the head marginals a (B, h, n, n) per iteration: soft dependency parses.
        ``hidden_states`` are the label logits s (B, n, N) after each iteration. With ROOT also
        ``root_attentions`` and ``root_hidden_states`` (module doc).
        """
        inference = self.mfvi(input_ids, attention_mask, output_attentions)
        scale = self.config.scales().output
        logits, loss = mlm_readout(lambda x: self.logits_tap(self.readout(scale * x)), inference.labels, labels,
                                   scored_logits_only)
        return PTMaskedLMOutput(loss=loss, logits=logits,
                                **inference.outputs(output_hidden_states, output_attentions))


class PTForTokenClassification(PTEncoder):
    """A tag per token: y_i = (alpha_out/m) W_task s_i + b on each word's final label logits
    (docs/design.md §9); W_task is an output-role matrix that starts at zero. Labels: -100 = unscored
    (HF: a word's later subword pieces, padding)."""

    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"^readout\."]  # an MLM checkpoint's read-out (§9)

    def __init__(self, config: PTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.classifier = classifier_linear(config)  # W_task, b
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
        **kwargs,
    ) -> PTTokenClassifierOutput:
        """``logits`` (B, n, num_labels); ``loss`` the mean cross-entropy over labels != -100."""
        inference = self.mfvi(input_ids, attention_mask, output_attentions)
        logits = self.logits_tap(self.classifier(self.config.scales().output * inference.labels))
        return PTTokenClassifierOutput(loss=token_classification_loss(logits, labels), logits=logits,
                                       **inference.outputs(output_hidden_states, output_attentions))


class PTForSequenceClassification(PTEncoder):
    """A label per sequence: the read-out (alpha_out/m) W_task x + b (W_task output role, zero init) on
    ROOT's final label logits x = s_0 (``classifier_pooling="root"``, needs ``use_root``), or, for the
    ablation of docs/design.md §9, on the mean of the words' final scaled marginals q_i = N Q(Z_i)
    (``"mean"``)."""

    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"^readout\."]

    def __init__(self, config: PTConfig):
        super().__init__(config)
        if config.classifier_pooling == "root" and not config.use_root:
            raise ValueError("classifier_pooling='root' reads ROOT's label logits and needs use_root=True "
                             "(or set classifier_pooling='mean')")
        self.num_labels = config.num_labels
        self.classifier = classifier_linear(config)  # W_task, b
        self.post_init()

    def pooled(self, inference: PTInference, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, N): ROOT's final s_0, or the mean over real words of q_i = N softmax(s_i / lambda_Z)."""
        if self.config.classifier_pooling == "root":
            return inference.root_labels
        s = inference.labels
        acc = torch.promote_types(s.dtype, torch.float32)  # the softmax in >= fp32, as in the iterations
        q = self.config.hidden_size * torch.softmax(s.to(acc) / self.config.label_temperature, dim=-1)
        if attention_mask is None:
            return q.mean(dim=1)
        weights = attention_mask.to(q.dtype)[..., None]  # (B, n, 1)
        return (q * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
        **kwargs,
    ) -> PTSequenceClassifierOutput:
        """``logits`` (B, num_labels); ``loss`` as HF's sequence classifiers (``config.problem_type``)."""
        inference = self.mfvi(input_ids, attention_mask, output_attentions)
        pooled = self.pooled(inference, attention_mask)
        logits = self.logits_tap(self.classifier(self.config.scales().output * pooled))
        return PTSequenceClassifierOutput(loss=sequence_classification_loss(logits, labels, self.config),
                                          logits=logits, **inference.outputs(output_hidden_states, output_attentions))
