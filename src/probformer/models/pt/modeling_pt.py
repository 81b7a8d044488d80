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

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from probformer.models.mlm_readout import mlm_readout
from probformer.models.pt.configuration_pt import PTConfig
from probformer.parametrization import Role, tag

TAP_NAMES = ("q", "head_logits", "messages", "latent", "labels")


def bucket_index(n: int, max_distance: int, device: torch.device) -> torch.Tensor:
    """k(i, j) for every ordered pair: (min(|j-i|, D) - 1) + D * [j > i]; the diagonal is unused."""
    pos = torch.arange(n, device=device)
    offset = pos[None, :] - pos[:, None]  # (n, n): j - i
    dist = offset.abs().clamp(min=1, max=max_distance)
    return (dist - 1) + max_distance * (offset > 0).long()


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
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.unary

    def get_output_embeddings(self) -> nn.Linear:
        return self.readout

    def ternary_norm(self) -> torch.Tensor:
        return self.ternary.frobenius_norm()

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Run T MFVI iterations. Returns final label logits s (B, n, N), per-iteration s and head marginals."""
        c = self.config
        sc = c.scales()
        bsz, n = input_ids.shape
        N, M, D = c.hidden_size, c.latent_size, c.max_distance
        valid = (torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None
                 else attention_mask.to(torch.bool))  # (B, n)
        eye = torch.eye(n, dtype=torch.bool, device=input_ids.device)
        allowed = valid[:, :, None] & valid[:, None, :] & ~eye  # (B, n_i, n_j): candidate heads j of i
        offset = torch.arange(n, device=input_ids.device)
        offset = offset[None, :] - offset[:, None]  # (n, n): j - i
        far = (offset <= -D, offset >= D)  # the two buckets that need full n x n scores (design note 8)
        near, band_index, band_exists = self._band(n, D, input_ids.device)
        band_exists = band_exists.to(self.unary.weight.dtype)

        unary = sc.input * self.unary(input_ids)  # (B, n, N)
        if self.position is not None:
            unary = unary + sc.input * self.position.weight[:n]
        U = sc.ternary * self.ternary.U  # (K, h, N, r) effective weights
        V = sc.ternary * self.ternary.V
        B = sc.latent * self.latent.B if self.latent is not None else None  # (M, N)
        row_valid = valid[..., None].to(unary.dtype)
        acc = torch.promote_types(unary.dtype, torch.float32)  # softmaxes in >= fp32 under autocast

        s = unary
        states, marginals = [], []
        for t in range(c.num_iterations):
            tap = self.taps[t]
            # q = N * Q(Z): Theta(1) coordinates at any width (design note 2); pad rows are 0.
            q = tap["q"](N * torch.softmax(s.to(acc) / c.label_temperature, dim=-1).to(s.dtype) * row_valid)
            qry = torch.einsum("bia,khar->kbhir", q, U).unbind(0)  # K x (B, h, n, r): one GEMM for all queries
            key = torch.einsum("bia,khar->kbhir", q, V).unbind(0)
            e = sc.head_logit * self._head_scores(qry, key, far, near, band_index)
            e = tap["head_logits"](e)  # (B, h, n, n)
            logits_h = (e.to(acc) / c.head_temperature).masked_fill(~allowed[:, None], torch.finfo(acc).min)
            a = torch.softmax(logits_h, dim=-1) * allowed[:, None]  # rows with no candidate head are 0
            if output_attentions:
                marginals.append(a.detach())
            a = self.head_dropout(a.to(s.dtype))
            child, head = self._bucket_contexts(a, qry, key, far, near, band_index, band_exists)
            m = torch.einsum("kbhir,khar->bia", child, U) + torch.einsum("kbhir,khar->bia", head, V)
            if B is not None:
                g_logits = sc.latent_logit * (q @ B.t())  # (B, n, M)
                g = M * torch.softmax(g_logits.to(acc) / c.latent_temperature, dim=-1).to(s.dtype)
                g = tap["latent"](g * row_valid)
                m = m + g @ B
            m = tap["messages"](m)
            s = tap["labels"](self.label_dropout(unary + m))
            states.append(s)
        return s, states, marginals

    @staticmethod
    def _band(n: int, max_distance: int, device: torch.device) -> tuple[list[tuple[int, int]], torch.Tensor, torch.Tensor]:
        """Near buckets as (bucket id, offset j - i) with, for each row i, the flat index i*n + (i+offset)
        of its entry (clamped) and whether that entry exists: (n, W) each, W = 2(D-1)."""
        D = max_distance
        near = [(d - 1, -d) for d in range(1, D)] + [(D + d - 1, d) for d in range(1, D)]
        rows = torch.arange(n, device=device)[:, None]
        cols = rows + torch.tensor([off for _, off in near], device=device, dtype=torch.long)[None, :]
        exists = (cols >= 0) & (cols < n)
        return near, rows * n + cols.clamp(0, n - 1), exists

    @staticmethod
    def _shift(x: torch.Tensor, off: int) -> torch.Tensor:
        """y[..., i, :] = x[..., i + off, :], zero where i + off is outside the sequence."""
        n = x.shape[-2]
        if abs(off) >= n:  # a bucket reaching past the sequence (n < max_distance): no pair in it
            return torch.zeros_like(x)
        if off >= 0:
            return F.pad(x[..., off:, :], (0, 0, 0, off))
        return F.pad(x[..., : n + off, :], (0, 0, -off, 0))

    def _head_scores(self, qry, key, far, near, band_index) -> torch.Tensor:
        """<qry_{k(i,j)}[i], key_{k(i,j)}[j]> for every pair: full products only for the two far
        buckets, a band of shifted dot products for the near ones (|i-j| < D), design note 8."""
        D = self.config.max_distance
        lo, hi = D - 1, 2 * D - 1  # bucket ids of j <= i-D and j >= i+D
        e = (qry[lo] @ key[lo].transpose(-1, -2)) * far[0] + (qry[hi] @ key[hi].transpose(-1, -2)) * far[1]
        if not near:
            return e
        band = torch.stack([(qry[k] * self._shift(key[k], off)).sum(-1) for k, off in near], dim=-1)  # (B, h, n, W)
        flat_index = band_index.flatten().expand(*band.shape[:2], -1)
        return e.flatten(-2).scatter_add(-1, flat_index, band.flatten(-2)).view_as(e)

    def _bucket_contexts(self, a, qry, key, far, near, band_index, band_exists) -> tuple[torch.Tensor, torch.Tensor]:
        """Per bucket k: child_k[i] = sum_j a[i,j] key_k[j] and head_k[i] = sum_j a[j,i] qry_k[j] over
        the pairs in bucket k (the values the two message directions mix); stacked (K, B, h, n, r)."""
        D = self.config.max_distance
        child: list[torch.Tensor] = [None] * (2 * D)  # type: ignore[list-item]
        head: list[torch.Tensor] = [None] * (2 * D)  # type: ignore[list-item]
        for k, mask in ((D - 1, far[0]), (2 * D - 1, far[1])):
            a_k = a * mask
            child[k] = a_k @ key[k]
            head[k] = a_k.transpose(-1, -2) @ qry[k]
        if near:
            n = a.shape[-1]
            a_band = a.flatten(-2).gather(-1, band_index.flatten().expand(*a.shape[:2], -1))
            a_band = a_band.view(*a.shape[:2], n, len(near)) * band_exists  # a[i, i+off]
            for w, (k, off) in enumerate(near):
                a_w = a_band[..., w, None]
                child[k] = a_w * self._shift(key[k], off)
                head[k] = self._shift(a_w * qry[k], -off)
        return torch.stack(child), torch.stack(head)

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
