"""SP and muP in one place: parameter roles, per-role init / lr / forward multipliers, AdamW groups.

docs/design.md §4 gives the table; section 4a how we implement it: every stored weight keeps a
width-independent (SP-scale) init and the width dependence lives in forward multipliers
``c_role(N)`` and in per-group learning-rate factors, chosen so that at the base width N0 the muP
model *is* the SP model, in forward and under Adam (tests check both).

Roles are tagged when a layer is built (:func:`tag`), never guessed from parameter names:

=========  =====================================  ==========================================
role       PT                                     BERT / UT
=========  =====================================  ==========================================
input      S (unary / embedding), P (positions)   word / position / timestep embeddings
hidden     U, V (ternary), B (binary)             Q, K, V, O, FFN in
lowrank    U, V under head paradigm 1 (below)     --
ffn        --                                     FFN out (its fan-in is the FFN width I)
output     W (read-out)                           MLM decoder
vector     biases                                 biases, LayerNorm
=========  =====================================  ==========================================

Adam lr: input / output / vector get eta; hidden gets ``eta * hidden_lr_mult`` where
``hidden_lr_mult = (N0/N)^(1 - beta)`` under muP (so beta = 1 keeps one lr for every stored
weight, beta = 1/2 is textbook muP with its 1/sqrt(m) factor on the stored scale; see 4a) and 1
under SP. docs/design.md §4's m is each matrix's fan-in multiplier: N/N0 for every hidden matrix but
BERT / UT's FFN output projection, whose fan-in is the FFN width I, so its m is I/I0 (``ffn``: init
sigma/sqrt(I/I0), lr eta * I0/I). The two agree while I grows in proportion to N (``with_width``);
they part when I is set on its own, as ``probformer size`` does to land on a parameter budget.
PT's head-selection paradigm 1 (docs/design.md §5; ``head_paradigm=1``) keeps the rank r and the
channels fixed as N grows, so U, V in R^{N x r} are no longer N x Theta(N) hidden matrices, and
they are not muP's output weights either: each is used both ways, N -> r (queries / keys q U,
fan-in N) and r -> N (messages U key, fan-in r). What is still a hidden (N x N) matrix is their
product, the ternary potential T = U V^T: its learned part must be Theta(1/N) entrywise, like every
muP hidden matrix, so that the messages T q stay Theta(1). With r fixed that takes factors whose
updates are Theta(1/sqrt(N)) each, i.e. an effective Adam lr eta * (N0/N)^(1/2) (role ``lowrank``;
stored lr factor (N0/N)^(1/2 - beta), 1 at beta = 1/2), where the hidden role's eta * N0/N would give
Theta(1/N) updates whose messages vanish like N^-1/2 (their head logits like 1/N). The head logits
(alpha_H / r) <q U, q V> then grow like N, which is exactly what paradigm 1's head temperature
lambda_H * N/N0 (:func:`pt_head_temperature`) brings back to Theta(1). Init stays the hidden one
(effective std (N0/N)^beta / sqrt(N0 r0)), and so does eps (their gradients start at the hidden
ones' scale and only grow as the factors learn). The coordinate check measured both lr rules
(docs/results/coord-check.md, "Paradigm 1"). Under SP the role's lr factor is 1, like every SP group's.

Weight decay is decoupled (AdamW multiplies it by each group's own lr) and is *not*
rescaled with width: our choice, documented in docs/parametrization.md; biases, norms and embeddings are
excluded from decay.

Adam epsilon: under muP every width-dependent parameter's gradient shrinks with width (entries of
dL/dW are Theta(1/N) for input, output, hidden and norm/bias parameters, and Theta(N^-(1+beta)) for PT's
*stored* hidden weights, which sit behind a forward multiplier ~ N^-beta). A fixed eps therefore
damps Adam's update more and more as N grows: with a zero read-out (and BERT's zero query) the first
gradients into the body are ~1e-8 at N = 512, the size of the usual eps = 1e-8, and the coordinate
check's attention logits shrank like N^-0.5 because of it. So muP scales eps with the gradient, per
group (``eps_mult`` = N0/N, ``hidden_eps_mult`` = N0/N for BERT/UT and (N0/N)^(1+beta) for PT), which
keeps eps / |grad| width-independent (Everett et al. 2024; CompleteP scales eps by 1/m the same way).
Both are 1 at N = N0 and under SP, so muP still equals SP at the base width.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

import torch
from torch import nn

PRESETS = ("sp", "mup")


class Role(str, Enum):
    INPUT = "input"
    HIDDEN = "hidden"
    LOWRANK = "lowrank"  # a factor of a rank-r hidden matrix with r fixed as N grows: PT paradigm 1's U, V (module doc)
    FFN = "ffn"  # a hidden matrix whose fan-in is the FFN width, not N (module doc)
    OUTPUT = "output"
    VECTOR = "vector"


_ROLE_ATTR = "_probformer_param_roles"


ModuleT = TypeVar("ModuleT", bound=nn.Module)  # tag() hands back the module it was given, typed as such


def tag(module: ModuleT, **roles: Role) -> ModuleT:
    """Record the role of ``module``'s own parameters, e.g. ``tag(linear, weight=Role.HIDDEN, bias=Role.VECTOR)``.

    Roles live on the module (not on the tensors) so they survive ``.to()``, ``load_state_dict``,
    ``from_pretrained`` and ``torch.compile``.
    """
    table = dict(getattr(module, _ROLE_ATTR, {}))
    for name, role in roles.items():
        if not isinstance(getattr(module, name, None), nn.Parameter):
            raise AttributeError(f"{type(module).__name__} has no parameter {name!r} to tag")
        table[name] = Role(role)
    object.__setattr__(module, _ROLE_ATTR, table)
    return module


def named_roles(model: nn.Module) -> Iterator[tuple[str, nn.Parameter, Role]]:
    """Every trainable parameter with its role; an untagged one is a bug in the model, so it raises."""
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        table: dict[str, Role] = getattr(module, _ROLE_ATTR, {})
        for p_name, param in module.named_parameters(recurse=False):
            if id(param) in seen or not param.requires_grad:
                continue
            seen.add(id(param))
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if p_name not in table:
                raise ValueError(f"parameter {full!r} has no parametrization role; tag it when the layer is built")
            yield full, param, table[p_name]


def check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"parametrization must be one of {PRESETS}, got {preset!r}")


@dataclass(frozen=True)
class PTScales:
    """Numbers the PT forward and init need, derived from width and preset (docs/design.md §2, 4, 4a).

    The forward always works in scaled coordinates q = N * Q (docs/design.md §2); the 2023 SP model is
    recovered by the multipliers below (``ternary = 1/sqrt(N)``, head factor 1, ``latent = 1/M``).
    """

    ternary: float  # c_U = c_V: effective U = ternary * stored U
    latent: float  # c_B: effective B = latent * stored B
    head_logit: float  # alpha_H / r: e = head_logit * <q U_eff, q V_eff>
    latent_logit: float  # alpha_G: latent logits = latent_logit * (B_eff q)
    input: float  # alpha_in on S[w] (and P)
    output: float  # read-out multiplier on s before W
    init_input: float  # std of stored S, P
    init_ternary: float  # std of stored U, V
    init_latent: float  # std of stored B
    init_output: float  # std of stored W (0 = zero init)
    hidden_lr_mult: float  # Adam lr factor of the hidden group
    lowrank_lr_mult: float = 1.0  # Adam lr factor of the lowrank group (paradigm 1's U, V; module doc)
    head_temperature: float = 1.0  # lambda_H at this width: head softmax logits are e / head_temperature
    eps_mult: float = 1.0  # Adam eps factor of the input / output / vector groups (module doc)
    hidden_eps_mult: float = 1.0  # Adam eps factor of the hidden group


def pt_scales(
    *,
    preset: str,
    hidden_size: int,
    rank: int,
    latent_size: int,
    base_hidden_size: int,
    base_rank: int,
    base_latent_size: int,
    hidden_exponent: float,
    input_mult: float,
    output_mult: float,
    head_mult: float,
    latent_mult: float,
    init_std_input: float,
    init_std_hidden: float,
    init_std_output: float,
    head_paradigm: int = 2,
    head_temperature: float = 1.0,
) -> PTScales:
    """``head_paradigm`` / ``head_temperature``: docs/design.md §5 and the model's lambda_H; see
    :func:`pt_head_temperature`."""
    check_preset(preset)
    n, r, m_lat = hidden_size, rank, latent_size
    temperature = pt_head_temperature(head_temperature, head_paradigm, hidden_size, base_hidden_size)
    if preset == "sp":
        # 2023 PT: Q unscaled, head logits N<QU, QV>, U, V ~ N(0, 1/r). In q = N Q coordinates this
        # is U_eff = U / sqrt(N), head factor 1 (alpha_H = r), B logits (1/N) B q, messages B^T g / M.
        return PTScales(
            ternary=1.0 / math.sqrt(n),
            latent=1.0 / m_lat,
            head_logit=head_mult * 1.0,
            latent_logit=latent_mult * m_lat / n,
            input=input_mult,
            output=output_mult,
            init_input=init_std_input,
            init_ternary=init_std_hidden / math.sqrt(r),
            init_latent=init_std_hidden / math.sqrt(n),
            init_output=init_std_output,
            hidden_lr_mult=1.0,
            lowrank_lr_mult=1.0,
            head_temperature=temperature,
        )
    n0, r0, m0 = base_hidden_size, base_rank, base_latent_size
    shrink = (n0 / n) ** hidden_exponent  # (N0/N)^beta, docs/design.md §4a
    return PTScales(
        ternary=shrink / math.sqrt(n0),
        latent=shrink / m0,
        head_logit=head_mult * r0 / r,  # alpha_H = r0: muP's 1/d_head for the rank-r dot product
        latent_logit=latent_mult * m0 / n0,
        input=input_mult,
        output=output_mult * n0 / n,  # MuReadout's 1/m
        init_input=init_std_input,
        init_ternary=init_std_hidden / math.sqrt(r0),
        init_latent=init_std_hidden / math.sqrt(n0),
        init_output=init_std_output,
        hidden_lr_mult=(n0 / n) ** (1.0 - hidden_exponent),
        # Paradigm 1's U, V (role lowrank, module doc): effective lr eta (N0/N)^(1/2). Unused under paradigm 2.
        lowrank_lr_mult=(n0 / n) ** (0.5 - hidden_exponent),
        head_temperature=temperature,
        # Gradients: dL/d(effective weight) ~ 1/N, and a stored hidden weight's gradient carries its
        # multiplier (N0/N)^beta on top; eps follows each (module doc).
        eps_mult=n0 / n,
        hidden_eps_mult=(n0 / n) ** (1.0 + hidden_exponent),
    )


def pt_head_temperature(head_temperature: float, head_paradigm: int, hidden_size: int, base_hidden_size: int) -> float:
    """lambda_H at width N: ``head_temperature`` under paradigm 2 (docs/design.md §5: tau = Theta(1), r_tot
    grows with N), ``head_temperature * N/N0`` under paradigm 1 (r_tot fixed, tau proportional to N),
    so that at N = N0 the two paradigms are one model.

    Under SP the same rule applies (N0: the config's base width; a model that is its own base has
    m = 1). The paradigm is a choice of model family -- how the CRF's head-selection free energy and
    r_tot scale with N, appendix B -- not a choice of init and lr, which is all that SP and muP differ
    in (docs/design.md §4); so SP and muP paradigm-1 models are, like paradigm 2's, the same model at N0
    and differ only in init / lr away from it.
    """
    if head_paradigm == 2:
        return head_temperature
    if head_paradigm == 1:
        return head_temperature * hidden_size / base_hidden_size
    raise ValueError(f"head_paradigm must be 1 or 2, got {head_paradigm!r}")


def pt_ternary_role(head_paradigm: int) -> Role:
    """The role of PT's ternary factors U, V (and ROOT's U^R, V^R): hidden under paradigm 2, lowrank
    under paradigm 1, where their rank stays fixed as N grows (module doc)."""
    return Role.LOWRANK if head_paradigm == 1 else Role.HIDDEN


@dataclass(frozen=True)
class TransformerScales:
    """Numbers the BERT / UT forward and init need (docs/design.md §4, 6; mutransformers conventions)."""

    attention: float  # multiplies q.k: 1/sqrt(d_head) in SP, attn_mult / d_head in muP
    input: float  # alpha_in on the embedding sum
    output: float  # read-out multiplier (1 in SP, output_mult * N0/N in muP)
    init_std: float  # std of embeddings and hidden matrices at the base width
    hidden_init: float  # std of hidden matrices at this width
    zero_query: bool  # muP zero-initialises the query projection
    init_output: float  # std of the (untied) decoder; SP ties it to the embedding
    hidden_lr_mult: float
    ffn_init: float  # std of the FFN output projection (fan-in I: module doc)
    ffn_lr_mult: float  # its Adam lr factor
    eps_mult: float = 1.0  # Adam eps factor of every group (module doc): gradients are ~1/N under muP
    hidden_eps_mult: float = 1.0


def transformer_scales(
    *,
    preset: str,
    hidden_size: int,
    head_dim: int,
    base_hidden_size: int,
    base_head_dim: int,
    input_mult: float,
    output_mult: float,
    attn_mult: float,
    init_std: float,
    init_std_output: float,
    intermediate_size: int,
    base_intermediate_size: float,
) -> TransformerScales:
    """``intermediate_size`` / ``base_intermediate_size``: I and I0, for the FFN output projection's own
    fan-in multiplier (module doc)."""
    check_preset(preset)
    if preset == "sp":
        return TransformerScales(
            attention=attn_mult / math.sqrt(head_dim),
            input=input_mult,
            output=output_mult,
            init_std=init_std,
            hidden_init=init_std,
            zero_query=False,
            init_output=init_std,
            hidden_lr_mult=1.0,
            ffn_init=init_std,
            ffn_lr_mult=1.0,
        )
    m = hidden_size / base_hidden_size
    m_ffn = intermediate_size / base_intermediate_size
    return TransformerScales(
        # attn_mult * sqrt(d0) / d equals SP's 1/sqrt(d) at the base head size (mup's "8/d" for d0=64).
        attention=attn_mult * math.sqrt(base_head_dim) / head_dim,
        input=input_mult,
        output=output_mult / m,
        init_std=init_std,
        hidden_init=init_std / math.sqrt(m),
        zero_query=True,
        init_output=init_std_output,
        hidden_lr_mult=1.0 / m,
        eps_mult=1.0 / m,  # every gradient (embeddings, norms, hidden, decoder) is Theta(1/N): module doc
        hidden_eps_mult=1.0 / m,  # also the FFN output's: its gradient is ~1/N whatever I (module doc)
        ffn_init=init_std / math.sqrt(m_ffn),
        ffn_lr_mult=1.0 / m_ffn,
    )


@dataclass(frozen=True)
class GroupSpec:
    """One AdamW group: its role, lr factor relative to the base lr, weight decay and eps factor."""

    role: Role
    lr_mult: float
    weight_decay: float
    eps_mult: float = 1.0


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    hidden_lr_mult: float,
    eps: float | None = None,
    eps_mult: float = 1.0,
    hidden_eps_mult: float = 1.0,
    ffn_lr_mult: float | None = None,
    lowrank_lr_mult: float | None = None,
) -> list[dict]:
    """The AdamW param groups for ``model``: one per role, each with its own lr (docs/design.md §4).

    Every group carries ``lr_mult`` and ``role`` so a schedule can scale each group's own lr and a
    reader of the optimizer state can see what was applied. With ``eps`` each group also gets its own
    Adam eps, ``eps * eps_mult`` (``hidden_eps_mult`` for the hidden group): pass the model's
    ``scales().eps_mult`` / ``hidden_eps_mult`` for muP's eps rule (module doc). ``ffn_lr_mult``: the
    FFN output projection's lr factor (None: ``hidden_lr_mult``); its eps factor is the hidden one.
    ``lowrank_lr_mult``: likewise for the lowrank role (PT paradigm 1's U, V; module doc).
    """
    specs = {
        Role.INPUT: GroupSpec(Role.INPUT, 1.0, 0.0, eps_mult),
        Role.VECTOR: GroupSpec(Role.VECTOR, 1.0, 0.0, eps_mult),
        Role.HIDDEN: GroupSpec(Role.HIDDEN, hidden_lr_mult, weight_decay, hidden_eps_mult),
        Role.LOWRANK: GroupSpec(Role.LOWRANK, hidden_lr_mult if lowrank_lr_mult is None else lowrank_lr_mult,
                                weight_decay, hidden_eps_mult),
        Role.FFN: GroupSpec(Role.FFN, hidden_lr_mult if ffn_lr_mult is None else ffn_lr_mult, weight_decay,
                            hidden_eps_mult),
        Role.OUTPUT: GroupSpec(Role.OUTPUT, 1.0, weight_decay, eps_mult),
    }
    buckets: dict[Role, list[nn.Parameter]] = {role: [] for role in specs}
    names: dict[Role, list[str]] = {role: [] for role in specs}
    for name, param, role in named_roles(model):
        buckets[role].append(param)
        names[role].append(name)
    groups = []
    for role, spec in specs.items():
        if not buckets[role]:
            continue
        group = {
            "params": buckets[role],
            "param_names": names[role],
            "role": role.value,
            "lr_mult": spec.lr_mult,
            "lr": lr * spec.lr_mult,
            "weight_decay": spec.weight_decay,
        }
        if eps is not None:
            group["eps"] = eps * spec.eps_mult
        groups.append(group)
    return groups


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    hidden_lr_mult: float | None = None,
    eps_mult: float | None = None,
    hidden_eps_mult: float | None = None,
    ffn_lr_mult: float | None = None,
    lowrank_lr_mult: float | None = None,
    scales=None,
    fused: bool = False,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`, with the per-group lr and eps factors read from the model's
    own ``config.scales()`` (the parametrization of *this* model: 1 under SP and at muP's base
    width), so no caller can forget the eps rule. An explicit factor overrides the model's; a model
    without ``config.scales`` (e.g. HF's own BERT) needs none (all factors 1). ``scales``: the bare
    model's, when ``model`` is a wrapper around it (the trainer's objective under DDP / FSDP); groups
    are then still built from the wrapper's parameters, by name."""
    if scales is None and hasattr(getattr(model, "config", None), "scales"):
        scales = model.config.scales()
    def factor(explicit: float | None, name: str) -> float:
        return explicit if explicit is not None else (getattr(scales, name) if scales is not None else 1.0)
    hidden = factor(hidden_lr_mult, "hidden_lr_mult")
    # The FFN output's factor (BERT / UT): explicit, else the model's own; an explicit hidden factor
    # moves it by the same ratio, so that it keeps its own fan-in's relation to the other hidden matrices.
    # PT paradigm 1's lowrank factor (U, V) the same way.
    def relative(explicit: float | None, name: str) -> float | None:
        if explicit is None and getattr(scales, name, None) is not None:
            return getattr(scales, name) * (hidden / scales.hidden_lr_mult)
        return explicit

    groups = param_groups(model, lr=lr, weight_decay=weight_decay, hidden_lr_mult=hidden,
                          eps=eps, eps_mult=factor(eps_mult, "eps_mult"),
                          hidden_eps_mult=factor(hidden_eps_mult, "hidden_eps_mult"),
                          ffn_lr_mult=relative(ffn_lr_mult, "ffn_lr_mult"),
                          lowrank_lr_mult=relative(lowrank_lr_mult, "lowrank_lr_mult"))
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)
