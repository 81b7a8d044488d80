"""PTConfig: the Probabilistic Transformer's hyperparameters (docs/design.md §0-5)."""

from __future__ import annotations

from typing import Literal

from transformers import PretrainedConfig

from probformer.models.config_utils import complete_label_maps, replace_config
from probformer.models.pt.bucket_kernels import KERNEL_NAMES
from probformer.parametrization import PRESETS, PTScales, pt_scales

WIDTH_SCALINGS = ("channels", "rank")
HEAD_PARADIGMS = (1, 2)  # docs/design.md §5: 2 = r_tot grows with N (default), 1 = r_tot fixed, lambda_H grows with N
CLASSIFIER_POOLINGS = ("root", "mean")  # what PTForSequenceClassification reads out (docs/design.md §9)


class PTConfig(PretrainedConfig):
    """Configuration of :class:`PTForMaskedLM` and the PT task models.

    Widths: ``hidden_size`` is N (values of each label Z_i), ``num_channels`` * ``rank`` = r_tot,
    ``latent_size`` is M. Under ``width_scaling="channels"`` (default) a wider model adds channels
    at a fixed rank, like adding attention heads at fixed d_head; under ``"rank"`` it grows the rank at
    fixed channels. Either way r_tot and M grow with N (docs/design.md §5, paradigm 2). The ``base_*``
    fields fix the base model (N0, r0, M0) that muP multipliers are relative to; left as ``None``
    they are derived from ``base_hidden_size`` and the width-scaling rule.

    ``head_paradigm=1`` (experimental, docs/design.md §5) is the appendix's other head-selection
    paradigm: channels and rank stay at their base values as N grows (r_tot fixed; only M grows with
    N, and ``width_scaling`` has nothing to pick) and the head-selection temperature grows with the
    width, lambda_H * N/N0. At N = N0 both paradigms are the same model. The width rules live in
    :func:`probformer.parametrization.pt_scales`.

    ``use_root`` adds the ROOT variable of docs/design.md §9 (off by default, so configs saved before
    it existed load unchanged); ``classifier_pooling`` is what :class:`PTForSequenceClassification`
    reads out: ROOT's final label logits (``"root"``, needs ``use_root``) or the words' mean scaled
    marginals (``"mean"``). Task labels (``id2label``, ``label2id``, ``num_labels``, ``problem_type``)
    are Hugging Face's.
    """

    model_type = "probformer-pt"

    def __init__(
        self,
        vocab_size: int = 4096,
        hidden_size: int = 128,  # N: values of each word label Z_i (the width)
        num_channels: int = 4,  # h: head-selection channels (~ attention heads)
        rank: int = 32,  # r: rank of each ternary factor T_ck = U_ck V_ck^T
        latent_size: int = 256,  # M: values of the FFN-like latent G_i
        num_iterations: int = 3,  # T: MFVI iterations (~ layers, parameters shared)
        max_distance: int = 4,  # distance buckets {1}, {2}, ..., {>= max_distance}, x 2 directions
        use_latent_factor: bool = True,  # binary factor B[G_i, Z_i]; False gives the 2023 model
        use_position_unary: bool = False,  # absolute position term P[i, a] in the unary factor
        max_position_embeddings: int = 512,  # rows of P (only with use_position_unary)
        head_dropout: float = 0.1,  # dropout on head marginals a
        label_dropout: float = 0.1,  # dropout on label logits s
        label_temperature: float = 1.0,  # lambda_Z
        head_temperature: float = 1.0,  # lambda_H
        latent_temperature: float = 1.0,  # lambda_G
        parametrization: Literal["sp", "mup"] = "mup",  # SP = 2023 PT; muP = docs/design.md §4a
        base_hidden_size: int | None = None,  # N0 (None: this model is its own base)
        base_rank: int | None = None,  # r0 (None: derived from width_scaling)
        base_latent_size: int | None = None,  # M0 (None: M * N0 / N)
        width_scaling: Literal["channels", "rank"] = "channels",
        head_paradigm: int = 2,  # docs/design.md §5: 2 = r_tot grows with N; 1 = r_tot fixed, lambda_H x N/N0
        hidden_exponent: float = 0.5,  # beta: hidden multiplier (N0/N)^beta; 1/2 = textbook muP (docs/design.md §4a-4b)
        input_mult: float = 1.0,  # alpha_in on S[w]
        output_mult: float = 1.0,  # alpha_out on the read-out
        head_mult: float = 1.0,  # alpha_H relative to its preset value
        latent_mult: float = 1.0,  # alpha_G relative to its preset value
        init_std_input: float = 0.3,  # sigma_in: std of S (and P); keeps q spread at init (coordinate check)
        init_std_hidden: float = 1.0,  # sigma_hid: U, V ~ sigma/sqrt(r), B ~ sigma/sqrt(N) (at base width)
        init_std_output: float = 0.0,  # sigma_out: std of read-out W (0 = zero init)
        mfvi_kernel: str = "auto",  # bucket computation: auto (fast on GPU, banded on CPU), fast, banded, reference
        use_root: bool = False,  # the ROOT variable Z_0 with unary rho and root-bucket factors (docs/design.md §9)
        classifier_pooling: Literal["root", "mean"] = "root",  # sequence read-out: ROOT's s_0, or the mean of q_i
        pad_token_id: int = 0,
        mask_token_id: int = 4,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_channels = num_channels
        self.rank = rank
        self.latent_size = latent_size
        self.num_iterations = num_iterations
        self.max_distance = max_distance
        self.use_latent_factor = use_latent_factor
        self.use_position_unary = use_position_unary
        self.max_position_embeddings = max_position_embeddings
        self.head_dropout = head_dropout
        self.label_dropout = label_dropout
        self.label_temperature = label_temperature
        self.head_temperature = head_temperature
        self.latent_temperature = latent_temperature
        self.parametrization = parametrization
        self.base_hidden_size = base_hidden_size
        self.base_rank = base_rank
        self.base_latent_size = base_latent_size
        self.width_scaling = width_scaling
        self.head_paradigm = head_paradigm
        self.hidden_exponent = hidden_exponent
        self.input_mult = input_mult
        self.output_mult = output_mult
        self.head_mult = head_mult
        self.latent_mult = latent_mult
        self.init_std_input = init_std_input
        self.init_std_hidden = init_std_hidden
        self.init_std_output = init_std_output
        self.mask_token_id = mask_token_id
        self.mfvi_kernel = mfvi_kernel
        self.use_root = use_root
        self.classifier_pooling = classifier_pooling
        # The read-out W is never tied to the unary S (docs/design.md §3; a property below). transformers 4
        # defaults tie_word_embeddings to True and would otherwise tie them, as both are V x N.
        kwargs.pop("tie_word_embeddings", None)
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        complete_label_maps(self)
        self.validate_pt()

    def validate_pt(self) -> None:
        positive = ("vocab_size", "hidden_size", "num_channels", "rank", "latent_size", "num_iterations",
                    "max_distance", "max_position_embeddings")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("head_dropout", "label_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        for name in ("label_temperature", "head_temperature", "latent_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.parametrization not in PRESETS:
            raise ValueError(f"parametrization must be one of {PRESETS}, got {self.parametrization!r}")
        if self.width_scaling not in WIDTH_SCALINGS:
            raise ValueError(f"width_scaling must be one of {WIDTH_SCALINGS}, got {self.width_scaling!r}")
        if isinstance(self.head_paradigm, bool) or self.head_paradigm not in HEAD_PARADIGMS:
            raise ValueError(f"head_paradigm must be 1 (r_tot fixed, head temperature x N/N0) or 2 (r_tot grows "
                             f"with N, the default), got {self.head_paradigm!r} (docs/design.md §5)")
        if not 0.0 <= self.hidden_exponent <= 1.5:
            raise ValueError(f"hidden_exponent must be in [0, 1.5], got {self.hidden_exponent!r}")
        for name in ("base_hidden_size", "base_rank", "base_latent_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or null, got {value!r}")
        if min(self.init_std_input, self.init_std_hidden, self.init_std_output) < 0:
            raise ValueError("init_std_* must be >= 0")
        if self.mfvi_kernel not in ("auto", *KERNEL_NAMES):
            raise ValueError(f"mfvi_kernel must be 'auto' or one of {KERNEL_NAMES}, got {self.mfvi_kernel!r}")
        if not isinstance(self.use_root, bool):
            raise ValueError(f"use_root must be true or false, got {self.use_root!r}")
        if self.classifier_pooling not in CLASSIFIER_POOLINGS:
            raise ValueError(f"classifier_pooling must be one of {CLASSIFIER_POOLINGS}, "
                             f"got {self.classifier_pooling!r}")

    # -- derived values -------------------------------------------------------------------------
    @property
    def tie_word_embeddings(self) -> bool:
        """Always False: W (V x N) reads labels out, S (V x N) scores them; they are different factors."""
        return False

    @tie_word_embeddings.setter
    def tie_word_embeddings(self, value: bool) -> None:
        """Ignored: transformers 4's PretrainedConfig.__init__ assigns its default (True) here."""

    @property
    def num_buckets(self) -> int:
        """K: directed distance buckets."""
        return 2 * self.max_distance

    @property
    def resolved_base(self) -> tuple[int, int, int]:
        """(N0, r0, M0) the muP multipliers are relative to."""
        n0 = self.base_hidden_size or self.hidden_size
        m = self.hidden_size / n0
        rank_fixed = self.width_scaling == "channels" or self.head_paradigm == 1  # paradigm 1: r never grows
        r0 = self.base_rank or (self.rank if rank_fixed else max(1, round(self.rank / m)))
        m0 = self.base_latent_size or max(1, round(self.latent_size / m))
        return n0, r0, m0

    def scales(self) -> PTScales:
        n0, r0, m0 = self.resolved_base
        return pt_scales(
            preset=self.parametrization,
            hidden_size=self.hidden_size,
            rank=self.rank,
            latent_size=self.latent_size,
            base_hidden_size=n0,
            base_rank=r0,
            base_latent_size=m0,
            hidden_exponent=self.hidden_exponent,
            head_paradigm=self.head_paradigm,
            head_temperature=self.head_temperature,
            input_mult=self.input_mult,
            output_mult=self.output_mult,
            head_mult=self.head_mult,
            latent_mult=self.latent_mult,
            init_std_input=self.init_std_input,
            init_std_hidden=self.init_std_hidden,
            init_std_output=self.init_std_output,
        )

    def with_width(self, hidden_size: int) -> PTConfig:
        """The same model family at width ``hidden_size``, base unchanged: M grows with N, and so does
        r_tot under paradigm 2 (channels or rank, ``width_scaling``); paradigm 1 keeps channels and rank
        (docs/design.md §5) and lets the head temperature grow instead (:meth:`scales`)."""
        n0, r0, m0 = self.resolved_base
        ratio = hidden_size / self.hidden_size
        grown = {}
        if self.head_paradigm == 2:
            name = "num_channels" if self.width_scaling == "channels" else "rank"
            grown[name] = max(1, round(getattr(self, name) * ratio))
        return replace_config(self, hidden_size=hidden_size, base_hidden_size=n0, base_rank=r0, base_latent_size=m0,
                              latent_size=max(1, round(self.latent_size * ratio)), **grown)
