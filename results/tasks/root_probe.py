"""What PT's ROOT read-out sees, and whether the words keep choosing ROOT (docs/tasks.md, SST-2).

Builds the default PT text classifier of ``probformer train --set task.name=text-classification`` on one
SST-style file (text<TAB>label) and trains it with plain Adam on that file's own batches (an over-fitting
probe: can the read-out fit the sentences at all?), printing every ``--every`` steps:

- s_0 mean |.|: ROOT's final label logits, averaged over a batch;
- s_0 spread: their standard deviation across the sentences of that batch (what the classifier can use);
- ROOT mass: P(H_i^c = ROOT) summed over a sentence's words, averaged over sentences and channels;
- accuracy over the whole file.

``--rho-init zero`` starts ROOT's unary rho at zero (ROOT's label marginal uniform, as 2023's ROOT, which
had no unary) instead of the model's own init (a row of S's). Example (the numbers docs/tasks.md quotes;
~2 min each on one core):

    python results/tasks/root_probe.py ../shared/data/sst/sst2-dev.tsv --lr 1e-2
    python results/tasks/root_probe.py ../shared/data/sst/sst2-dev.tsv --lr 1e-3
    python results/tasks/root_probe.py ../shared/data/sst/sst2-dev.tsv --lr 1e-3 --rho-init zero
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from probformer.config import load_config
from probformer.training.task_data import TaskData


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tsv", help="a text<TAB>label file (e.g. SST-2 dev)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--rho-init", choices=("model", "zero"), default="model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as out:
        config = load_config(overrides=["task.name=text-classification", f"task.train={args.tsv}",
                                        f"task.valid={args.tsv}", f"out_dir={out}"])
        data = TaskData(config, lambda _line: None)
        model = data.make_model(lambda _line: None)
    if args.rho_init == "zero":
        with torch.no_grad():
            model.root.rho.zero_()
    batches = [batch for _, batch in data.evaluation_sets()["valid"].batches]
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    @torch.no_grad()
    def report(step: int) -> None:
        model.eval()
        first = batches[0]
        out = model(first.input_ids, first.attention_mask, output_attentions=True, output_hidden_states=True)
        s0 = out.root_hidden_states[-1]
        mass = (out.root_attentions[-1] * first.attention_mask[:, None, :]).sum(-1).mean()
        correct = total = 0
        for batch in batches:
            logits = model(batch.input_ids, batch.attention_mask).logits
            correct += int((logits.argmax(-1) == batch.labels).sum())
            total += len(batch.labels)
        model.train()
        print(f"step {step:>4}: s_0 mean |.| {s0.abs().mean():.3g}, spread {s0.std(0).mean():.3g}, "
              f"ROOT mass {mass:.3g}, accuracy {correct / total:.3f}", flush=True)

    report(0)
    for step in range(1, args.steps + 1):
        batch = batches[(step - 1) % len(batches)]
        loss = model(batch.input_ids, batch.attention_mask, labels=batch.labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.every == 0:
            report(step)


if __name__ == "__main__":
    main()
