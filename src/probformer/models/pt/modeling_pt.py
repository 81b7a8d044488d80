"""PTForMaskedLM: the Probabilistic Transformer as a masked language model.

How it differs from a transformer encoder (design note sections 1-3):
- The hidden state of token i is a distribution over N discrete label values; the forward pass is
  mean-field variational inference (MFVI) in a CRF, T iterations with *shared* parameters.
- "Attention" is the posterior over the head H_i^c of token i in channel c; its logits come from
  ternary factors T_ck = U_ck V_ck^T (k: directed distance bucket), and the values it mixes are the
  messages that factor sends back, in *both* directions (i as child, i as head).
- Position enters only through the distance buckets (optionally an absolute unary term P).
- The FFN analogue is the binary factor B[G_i, Z_i] with latent G_i (off: the 2023 model).
- There are no norms and no residual stream: each iteration rebuilds s_i = S[w_i] + messages.

Equations implemented (design note 2, scaled coordinates q = N Q): per iteration, from the same q,
  qry = q U_ck, key = q V_ck;  e[c,i,j] = (alpha_H/r) <qry[i], key[j]>;  a = softmax_j(e / lambda_H)
  g = M softmax(alpha_G B q / lambda_G);  m_i = sum a U key (child) + sum a^T V qry (head)
  s = dropout(alpha_in S[w] + m + B^T g);  read-out y = (alpha_out/m) W s + b at masked positions.
Width-dependent multipliers come from :mod:`probformer.parametrization` (design note 4a).
"""

from __future__ import annotations

import types

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from probformer.models.mlm_readout import mlm_readout
from probformer.models.pt.bucket_kernels import BucketKernel, build_kernel, bucket_index  # noqa: F401 (re-export)
from probformer.models.pt.configuration_pt import PTConfig
from probformer.parametrization import Role, tag

TAP_NAMES = ("q", "head_logits", "messages", "latent", "labels")
_NO_TAPS = {name: (lambda x: x) for name in TAP_NAMES}


class TernaryFactors(nn.Module):
    """U, V in R^{K x h x N x r}: T_ck = U_ck V_ck^T per directed bucket k and channel c."""

    def __init__(self, num_buckets: int, num_channels: int, hidden_size: int, rank: int):
        super().__init__()
        self.U = nn.Parameter(torch.empty(num_buckets, num_channels, hidden_size, rank))
        self.V = nn.Parameter(torch.empty(num_buckets, num_channels, hidden_size, rank))
        tag(self, U=Role.HIDDEN, V=Role.HIDDEN)

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


class PTPreTrainedModel(PreTrainedModel):
    config_class = PTConfig
    base_model_prefix = "pt"
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        # Stored weights are width-independent at the base width (design note 4a); scales() holds stds.
        sc = self.config.scales()
        if isinstance(module, TernaryFactors):
            nn.init.normal_(module.U, std=sc.init_ternary)
            nn.init.normal_(module.V, std=sc.init_ternary)
        elif isinstance(module, LatentFactor):
            nn.init.normal_(module.B, std=sc.init_latent)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=sc.init_input)
        elif isinstance(module, nn.Linear):
            if sc.init_output > 0:
                nn.init.normal_(module.weight, std=sc.init_output)
            else:
                nn.init.zeros_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class PTForMaskedLM(PTPreTrainedModel):
    def __init__(self, config: PTConfig):
        super().__init__(config)
        c = config
        self.unary = tag(nn.Embedding(c.vocab_size, c.hidden_size), weight=Role.INPUT)  # S
        self.position = (
            tag(nn.Embedding(c.max_position_embeddings, c.hidden_size), weight=Role.INPUT)
            if c.use_position_unary else None
        )  # P
        self.ternary = TernaryFactors(c.num_buckets, c.num_channels, c.hidden_size, c.rank)
        self.latent = LatentFactor(c.latent_size, c.hidden_size) if c.use_latent_factor else None
        self.readout = tag(nn.Linear(c.hidden_size, c.vocab_size), weight=Role.OUTPUT, bias=Role.VECTOR)  # W, b
        self.head_dropout = nn.Dropout(c.head_dropout)
        self.label_dropout = nn.Dropout(c.label_dropout)
        # Distinct identity taps per iteration so activation hooks (coordinate check) see every call.
        self.taps = nn.ModuleList(
            nn.ModuleDict({name: nn.Identity() for name in TAP_NAMES}) for _ in range(c.num_iterations)
        )
        self.logits_tap = nn.Identity()
        self._compiled_iteration = None  # compile_regions()
        self._checkpoint_iterations = False  # enable_activation_checkpointing()
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.unary

    def get_output_embeddings(self) -> nn.Linear:
        return self.readout

    def ternary_norm(self) -> torch.Tensor:
        return self.ternary.frobenius_norm()

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
        """Run T MFVI iterations. Returns final label logits s (B, n, N), per-iteration s and head marginals."""
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

        iteration = self._compiled_iteration or self._iteration
        checkpointed = self._checkpoint_iterations and self.training and torch.is_grad_enabled()
        s = unary
        states, marginals = [], []
        for t in range(c.num_iterations):
            taps = _NO_TAPS if self._compiled_iteration is not None else self.taps[t]
            if checkpointed:
                s, a = checkpoint(iteration, s, unary, weights, B, allowed, row_valid, kernel, taps, use_reentrant=False)
            else:
                s, a = iteration(s, unary, weights, B, allowed, row_valid, kernel, taps)
            states.append(s)
            if output_attentions:
                marginals.append(a.detach())
        return s, states, marginals

    def _iteration(self, s, unary, weights, B, allowed, row_valid, kernel: BucketKernel, taps):
        """One MFVI iteration, design note 2 (asynchronous schedule: heads, latents, then labels, all
        from the same q). Returns the new label logits s (B, n, N) and head marginals a (B, h, n, n)."""
        c = self.config
        sc = c.scales()
        N, M = c.hidden_size, c.latent_size
        acc = torch.promote_types(unary.dtype, torch.float32)  # softmaxes in >= fp32 under autocast
        # q = N * Q(Z): Theta(1) coordinates at any width (design note 2); pad rows are 0.
        q = taps["q"](N * torch.softmax(s.to(acc) / c.label_temperature, dim=-1).to(s.dtype) * row_valid)
        qry, key = kernel.project(q, weights)  # K x (B, h, n, r) each: qry = q U_ck, key = q V_ck
        e = taps["head_logits"](sc.head_logit * kernel.scores(qry, key))  # (B, h, n, n)
        logits_h = (e.to(acc) / c.head_temperature).masked_fill(~allowed, torch.finfo(acc).min)
        a = torch.softmax(logits_h, dim=-1) * allowed  # rows with no candidate head are 0
        m = kernel.messages(self.head_dropout(a.to(s.dtype)), qry, key, weights)  # both directions
        if B is not None:
            g_logits = sc.latent_logit * (q @ B.t())  # (B, n, M)
            g = M * torch.softmax(g_logits.to(acc) / c.latent_temperature, dim=-1).to(s.dtype)
            m = m + taps["latent"](g * row_valid) @ B
        m = taps["messages"](m)
        return taps["labels"](self.label_dropout(unary + m)), a

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
        (the trainer) the read-out runs only where ``labels`` are scored and ``logits`` is
        (num_scored, vocab) (design note 8; :mod:`probformer.models.mlm_readout`).
        ``attentions`` are the head marginals a (B, h, n, n) per iteration: soft dependency parses.
        ``hidden_states`` are the label logits s (B, n, N) after each iteration.
        """
        s, states, marginals = self.encode(input_ids, attention_mask, output_attentions)
        scale = self.config.scales().output
        logits, loss = mlm_readout(lambda x: self.logits_tap(self.readout(scale * x)), s, labels, scored_logits_only)
        return MaskedLMOutput(
            loss=loss,
            logits=logits,
            hidden_states=tuple(states) if output_hidden_states else None,
            attentions=tuple(marginals) if output_attentions else None,
        )
