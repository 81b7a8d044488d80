"""The model side of a run: model, parallelized objective, optimizer, schedule (and the corpus cache).

Order matters for muP under DDP/FSDP: the model is built (same seed on every process, so every
shard starts from the same weights), parallelized (training/parallelize.py), and only then is the
optimizer built, from the wrapped module's parameters by name, with each group's lr and eps factors
from the model's own ``config.scales()``. training/run.py adds the data side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from probformer.config import ConfigError, TrainConfig
from probformer.data.prepared import CorpusSpec, PreparedCorpus, prepare_corpus
from probformer.data.shards import PreparedShards
from probformer.data.tokenization import OWN_SPECIAL_IDS
from probformer.models import build_model
from probformer.parametrization import build_optimizer
from probformer.training.distributed import ProcessContext
from probformer.training.parallelize import parallelize
from probformer.training.schedule import build_scheduler


def corpus_for(config: TrainConfig, log=print, tokenizer_json: bytes | None = None) -> PreparedCorpus:
    """The prepared corpus of ``config.data`` (built and cached on first use), in the tokenizer
    ``tokenizer_json`` when given (a resumed checkpoint's): the cache's own entry when its tokenizer is
    that one, else an entry of the corpus tokenised again with it (the model must read the ids it
    was trained on, whatever the cache holds now)."""
    d = config.data
    spec, cache_dir = CorpusSpec.from_data_config(d), Path(d.cache_dir) if d.cache_dir else None
    corpus = prepare_corpus(spec, cache_dir, log=log)
    if tokenizer_json is None or corpus.tokenizer_json == tokenizer_json:
        return corpus
    log(f"the corpus cache {corpus.root} holds another tokenizer than the checkpoint's (it was prepared by an "
        "older version, or another tokenizers release): using the checkpoint's, with the corpus tokenised again")
    return prepare_corpus(spec, cache_dir, log=log, tokenizer_json=tokenizer_json)


def model_from_config(config: TrainConfig, vocab_size: int, special_ids: Mapping[str, int] | None = None):
    """The model of ``config.model`` over the data's vocabulary; its ``pad_token_id`` and
    ``mask_token_id`` (config.DATA_OWNED_MODEL_KEYS) come from the data's ``special_ids`` (role -> id;
    default probformer's own [PAD] = 0, [MASK] = 4)."""
    kwargs = {k: v for k, v in config.model.items() if k != "arch"}
    ids = {**OWN_SPECIAL_IDS, **(special_ids or {})}
    return build_model(config.model["arch"], vocab_size=vocab_size, pad_token_id=int(ids["pad"]),
                       mask_token_id=int(ids["mask"]), **kwargs)


@torch.no_grad()
def init_bias_from_unigram(model, corpus: PreparedCorpus | PreparedShards) -> None:
    """Read-out bias = log unigram probabilities, so step 0 already predicts the unigram baseline and
    no early updates are spent learning token frequencies (the same for every architecture). Special
    ids (never a target) get the smallest of the others' values."""
    bias = model.get_output_embeddings().bias
    logp = torch.from_numpy(corpus.unigram_log_probs()).to(bias.dtype)
    bias.copy_(torch.where(torch.isfinite(logp), logp, torch.full_like(logp, logp[torch.isfinite(logp)].min().item())))


@dataclass
class TrainingSetup:
    model: nn.Module  # the bare Hugging Face model (config, save_pretrained)
    wrapped: nn.Module  # the objective around it, wrapped for DDP / FSDP when distributed
    optimizer: torch.optim.AdamW
    scheduler: torch.optim.lr_scheduler.LambdaLR
    group_hyperparameters: list[dict]  # per group, as computed from this config (re-applied on resume)


def build_training(config: TrainConfig, context: ProcessContext, device: torch.device, data,
                   total_steps: int, log=print) -> TrainingSetup:
    """``data`` (training/run.py's RunData) makes the model and its objective; this seeds, places,
    parallelizes and builds the optimizer and schedule around them."""
    o = config.optim
    if o.ternary_norm_penalty > 0 and config.model["arch"] != "pt":
        raise ConfigError(f"optim.ternary_norm_penalty: the 2023 regulariser is PT's; arch "
                          f"{config.model['arch']!r} has no ternary factors (set it to 0)")
    torch.manual_seed(config.seed)  # the same initial weights on every process
    model = data.make_model(log)
    model = model.to(device)
    model.train()
    wrapped = parallelize(data.objective(model), config, context, device)
    # Built after wrapping, by name; factors from the bare model's config (the wrapper has none).
    optimizer = build_optimizer(wrapped, lr=o.lr, weight_decay=o.weight_decay, betas=(o.beta1, o.beta2), eps=o.eps,
                                scales=model.config.scales(), fused=device.type == "cuda")
    scheduler = build_scheduler(optimizer, total_steps, o.warmup_fraction, o.decay, o.min_lr_ratio)
    hyper = [{k: g[k] for k in ("role", "lr_mult", "eps", "weight_decay", "initial_lr", "param_names")}
             for g in optimizer.param_groups]
    if context.rank > 0:
        torch.manual_seed(config.seed + context.rank)  # distinct dropout streams per process; rank 0's is unchanged
    return TrainingSetup(model, wrapped, optimizer, scheduler, hyper)


def reapply_group_hyperparameters(setup: TrainingSetup) -> None:
    """After loading a checkpoint's optimizer state: each group's lr, eps and weight decay come from
    THIS config (loading restores the saved ones), so a changed multiplier or width rule applies;
    the schedule then scales each group's own new base lr from the restored step."""
    groups, scheduler = setup.optimizer.param_groups, setup.scheduler
    def names(group_names) -> list[str]:  # as in the bare model (wrappers prefix module. / model.)
        return [n.removeprefix("module.").removeprefix("model.") for n in group_names]

    if len(groups) != len(setup.group_hyperparameters) or any(
            "param_names" in g and names(g["param_names"]) != names(h["param_names"])
            for g, h in zip(groups, setup.group_hyperparameters, strict=True)):
        raise ValueError("the checkpoint's optimizer groups hold other parameters than this model's")
    for group, fresh in zip(groups, setup.group_hyperparameters, strict=True):
        group.update(fresh)
    scheduler.base_lrs = [h["initial_lr"] for h in setup.group_hyperparameters]
    step = scheduler.last_epoch
    for group, base, factor in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
        group["lr"] = base * factor(step)
    scheduler._last_lr = [g["lr"] for g in groups]


def group_table(optimizer: torch.optim.Optimizer) -> str:
    """The optimizer's parameter groups as a small table (rank 0 logs it at the start of a run)."""
    rows = ["group      params        lr        eps  weight_decay"]
    for g in optimizer.param_groups:
        count = sum(p.numel() for p in g["params"])
        rows.append(f"{g['role']:<8} {count:>9,} {g['initial_lr']:>9.3g} {g['eps']:>10.3g} {g['weight_decay']:>13.3g}")
    return "\n".join(rows)
