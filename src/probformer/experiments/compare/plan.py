"""The runs of a comparison: every (budget, architecture, seed), sized to its budget from the
architecture's base model, with its training config, parameter counts and FLOPs per token."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from probformer.config import ConfigError, TrainConfig, config_from_dict, model_fields
from probformer.experiments.compare.spec import CompareSpec, arch_settings
from probformer.experiments.spec import merge
from probformer.sizing.budget import config_for_budget, count_parameters, training_flops_per_token
from probformer.sizing.units import count_label


@dataclass
class PlannedRun:
    arch: str
    budget: int
    seed: int
    config: TrainConfig
    counts: dict[str, int]  # count_parameters: total / non_embedding / embedding
    flops_per_token: float

    @property
    def name(self) -> str:
        return f"{self.arch}-{count_label(self.budget)}-s{self.seed}"

    @property
    def train_tokens(self) -> int:  # planned: total_steps full batches
        c = self.config
        return c.total_steps * c.batch_size * c.grad_accum * c.data.seq_len


def plan_runs(spec: CompareSpec, vocab_size: int, out_dir: str | Path) -> list[PlannedRun]:
    """Every (budget, arch, seed) run, smallest budget first, with its TrainConfig, counts and FLOPs."""
    runs = []
    for budget in spec.budgets:
        for arch in spec.archs:
            base, optim = arch_settings(spec, arch)
            try:
                sized = config_for_budget(arch, budget, vocab_size=vocab_size, base=base)
            except ValueError as err:
                raise ConfigError(f"budget {count_label(budget)}: {err}") from None
            model = {"arch": arch, **{k: getattr(sized, k) for k in model_fields(arch) if hasattr(sized, k)}}
            for seed in spec.seeds:
                config = config_from_dict(merge(spec.train, {
                    "model": model, "optim": optim, "seed": seed, "token_budget": spec.token_budget,
                    "eval_texts": spec.eval_texts,
                    "out_dir": str(Path(out_dir) / "runs" / f"{arch}-{count_label(budget)}-s{seed}"),
                    "progress": False, "test_eval": True}))
                flops = training_flops_per_token(arch, sized, config.data.seq_len, config.data.resolved_mask_prob)
                runs.append(PlannedRun(arch, budget, seed, config, count_parameters(arch, sized), flops))
    return runs


def check_eval_texts(spec: CompareSpec) -> None:
    """Every eval text exists, before hours of training find out (paths are read from the cwd)."""
    for name, path in spec.eval_texts.items():
        if not Path(path).exists():
            raise ConfigError(f"eval_texts.{name}: {path} not found (UD treebanks: universaldependencies.org, e.g. "
                              f"github.com/UniversalDependencies/UD_English-EWT); --set eval_texts.{name}=PATH, or "
                              f"--set 'eval_texts={{}}' for no out-of-domain column")
