"""What ``probformer compare`` reports: the results table, the verdicts per budget and the plots.

Inputs are plain rows, so that ``--rerender`` can remake ``results.md`` from the CSVs alone: the run
rows of ``results.csv`` (one per run: losses at the end of training, counts, FLOPs) and the curve rows
of ``curves.csv`` (one per run and evaluation: tokens seen, valid loss, and the loss on each
``eval_texts`` entry). Every verdict uses the seed-noise rule of :mod:`probformer.experiments.noise`.

Per budget the report says which architecture has the lowest mean loss at the end, by how much against
that rule; with learning curves also the ranking at half the token budget and whether it changed by the
end (so a reader sees whether the ranking is still moving with tokens), and how far each architecture
is behind the final leader at every curve fraction, with whether that gap narrows or widens; and the
same for each out-of-domain text, with whether its winner is the in-domain one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from probformer.config import OptimConfig
from probformer.experiments import noise
from probformer.experiments.compare.spec import CompareSpec, arch_settings
from probformer.experiments.curves import DEFAULT_MARGIN, VALID, Curve, loss_keys, plateau_exit
from probformer.figures import pyplot, save_figure
from probformer.sizing.units import count_label

__all__ = ["aggregate", "along_training", "checkpoint_steps", "curve_tables", "lead_table", "plot_learning_curves",
           "plot_loss", "render", "verdicts"]

HALF = 0.5  # the point along training the end-of-training ranking is checked against


def loss_key(text: str) -> str:
    return loss_keys(text)[0]


# -- end of training ---------------------------------------------------------------------------------
def aggregate(rows: list[dict[str, Any]], eval_names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One entry per (arch, budget): counts, FLOPs, mean and std of the losses over completed seeds."""
    keys = ["valid_loss", "test_loss", "valid_unigram_loss", *(k for n in eval_names for k in loss_keys(n))]
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["arch"], row["budget"]), []).append(row)
    out = []
    for (arch, budget), group in groups.items():
        done = [r for r in group if r["status"] == "completed"]
        entry = {"arch": arch, "budget": budget, "params": group[0]["params"],
                 "non_embedding_params": group[0]["non_embedding_params"], "train_flops": group[0]["train_flops"],
                 "seeds": len(group), "completed": len(done), "diverged": sum(r["status"] == "diverged" for r in group),
                 "diverged_seeds": [r["seed"] for r in group if r["status"] == "diverged"]}
        for key in keys:  # a run finished before an eval text was added has no value for it: left out
            seeds = noise.Seeds.of(v for v in (r.get(key, math.nan) for r in done) if math.isfinite(v))
            entry[key], entry[key + "_std"], entry[key + "_seeds"] = seeds.mean, seeds.std, seeds.n
        out.append(entry)
    return sorted(out, key=lambda e: e["budget"])  # stable: architectures stay in run order


def _pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.4f} ± {std:.4f}" if math.isfinite(std) else f"{mean:.4f}"


def _seeds(group: dict[str, Any], key: str) -> noise.Seeds:
    return noise.Seeds(group[key], group[key + "_std"], group[key + "_seeds"])


def _against_noise(d: noise.Difference) -> str:
    if not d.estimated:
        return "no seed-noise estimate"
    return f"{d.ratio:.2f}x noise: {'real' if d.real else 'within it'}"


def winners(groups: list[dict[str, Any]], key: str) -> dict[int, str]:
    """Per budget, the architecture with the lowest mean ``key`` (budgets without one left out)."""
    out = {}
    for budget in sorted({g["budget"] for g in groups}):
        ranked = sorted((g for g in groups if g["budget"] == budget and math.isfinite(g[key])), key=lambda g: g[key])
        if ranked:
            out[budget] = ranked[0]["arch"]
    return out


def verdicts(groups: list[dict[str, Any]], key: str = "valid_loss", what: str = "valid",
             along: dict[int, str] | None = None) -> list[str]:
    """Per budget: which architecture has the lowest mean ``key``, by how much, against seed noise;
    ``along[budget]`` (the ranking along training, :func:`along_training`) is appended to its line."""
    lines = []
    for budget in sorted({g["budget"] for g in groups}):
        here = [g for g in groups if g["budget"] == budget]
        ranked = sorted((g for g in here if g["completed"] and math.isfinite(g[key])), key=lambda g: g[key])
        lost = [f"{g['arch']} (all {g['seeds']} seeds diverged)" for g in here if not g["completed"] and g["diverged"]]
        note = f"; excluded: {', '.join(lost)}" if lost else ""
        label = count_label(budget)
        tail = f" {along[budget]}" if along and budget in along else ""
        if not ranked:
            lines.append(f"- {label}: no completed run{note}.{tail}")
            continue
        best = ranked[0]
        if len(ranked) == 1:
            lines.append(f"- {label}: {best['arch']} ({what} {_pm(best[key], best[key + '_std'])}) is the "
                         f"only architecture with a completed run{note}.{tail}")
            continue
        second = ranked[1]
        d = noise.difference(_seeds(second, key), _seeds(best, key))
        if d.estimated:
            judged = "larger than" if d.real else "within"
            verdict = f" = {d.ratio:.2f}x the seed noise ({d.noise:.4f}): {judged} the seed noise"
        else:
            verdict = " (fewer than two completed seeds: no seed-noise estimate)"
        partial = [g["arch"] for g in (best, second) if g["diverged"]]
        if partial:
            note += f"; means over completed seeds only for {', '.join(partial)}"
        lines.append(f"- {label}: {best['arch']} has the lowest mean {what} loss ({best[key]:.4f}), "
                     f"{d.delta:.4f} nats below {second['arch']} ({second[key]:.4f}){verdict}{note}.{tail}")
    return lines


# -- along training ----------------------------------------------------------------------------------
def checkpoint_steps(curve_rows: list[dict[str, Any]], fractions: Sequence[float]) -> list[tuple[float, int, int]]:
    """(fraction, step, tokens) per evaluation closest to each of ``fractions`` of the last evaluated step
    (ties: the earlier), with the fraction it is at; one list for every run (they share batch size and
    budget). Fractions that land on the same evaluation give it once."""
    steps = sorted({r["step"] for r in curve_rows})
    if not steps:
        return []
    tokens = {r["step"]: r["tokens"] for r in curve_rows}
    chosen = sorted({min(steps, key=lambda s: (abs(s - f * steps[-1]), s)) for f in fractions})
    return [(step / steps[-1], step, tokens[step]) for step in chosen]


def at_step(curve_rows: list[dict[str, Any]], step: int, key: str, archs: Sequence[str],
            budget: int) -> dict[str, noise.Seeds]:
    """Per architecture, its seeds' ``key`` at evaluation ``step`` of ``budget``."""
    out = {}
    for arch in archs:
        values = [r.get(key, math.nan) for r in curve_rows
                  if r["arch"] == arch and r["budget"] == budget and r["step"] == step]
        seeds = noise.Seeds.of(v for v in values if math.isfinite(v))
        if seeds.n:
            out[arch] = seeds
    return out


def _ranking(sides: dict[str, noise.Seeds]) -> list[str]:
    return sorted(sides, key=lambda a: sides[a].mean)


def along_training(curve_rows: list[dict[str, Any]], archs: Sequence[str], text: str = VALID) -> dict[int, str]:
    """Per budget: the ranking of mean loss on ``text`` at half the training and at its end, and whether it
    changed (each pair that swapped, with its difference at the end against seed noise). Nothing for a
    budget whose runs were evaluated only once."""
    points = checkpoint_steps(curve_rows, (HALF, 1.0))
    if len(points) < 2:  # one evaluation per run: no curve
        return {}
    (_, half, half_tokens), (_, full, full_tokens) = points
    key = loss_key(text)
    out = {}
    for budget in sorted({r["budget"] for r in curve_rows}):
        early, late = at_step(curve_rows, half, key, archs, budget), at_step(curve_rows, full, key, archs, budget)
        if len(early) < 2 or len(late) < 2:
            continue
        first, last = _ranking(early), _ranking(late)
        lead = noise.difference(early[first[1]], early[first[0]])
        text_early = (f"at {half_tokens:,} tokens ({half_tokens / full_tokens:.0%}) {' < '.join(first)} "
                      f"({first[0]} ahead by {lead.delta:.4f}, {_against_noise(lead)})")
        shared = [a for a in first if a in late]
        changes = []
        for i, a in enumerate(shared):
            for b in shared[i + 1:]:
                if last.index(b) < last.index(a):  # behind a at half the training, ahead of it at the end
                    d = noise.difference(late[a], late[b])
                    changes.append(f"{b} now below {a} (by {d.delta:.4f}, {_against_noise(d)})")
        change = "changed: " + "; ".join(changes) if changes else "unchanged"
        out[budget] = (f"Along training: {text_early}; at {full_tokens:,} tokens {' < '.join(last)}; "
                       f"ranking {change}.")
    return out


def _trend(gaps: list[float]) -> str:
    """How a gap behind the leader moved over the checkpoints: narrows / widens (every step, or overall)."""
    if len(gaps) < 2:
        return "-"
    steps = [b - a for a, b in itertools.pairwise(gaps)]
    overall = "narrows" if gaps[-1] < gaps[0] else "widens" if gaps[-1] > gaps[0] else "unchanged"
    if all(d < 0 for d in steps) or all(d > 0 for d in steps):
        return f"{overall} at every checkpoint"
    return f"{overall} overall ({gaps[0]:+.3f} -> {gaps[-1]:+.3f}), not monotone"


def lead_table(curve_rows: list[dict[str, Any]], archs: Sequence[str], fractions: Sequence[float],
               text: str = VALID) -> list[str]:
    """Per budget, the architecture that leads at the end and how far each other one is behind it at each
    of ``fractions`` of the training (mean difference, x the seed noise; negative: ahead of it there), and
    whether the gap narrows or widens: does more training let the others catch up?"""
    points = checkpoint_steps(curve_rows, fractions)
    if len(points) < 2:
        return []
    key = loss_key(text)
    head = " | ".join(f"{f:.0%} ({tokens:,} tokens)" for f, _, tokens in points)
    lines = [f"| budget | gap | {head} | trend |", "|---|---|" + "---|" * len(points) + "---|"]
    notes = []
    for budget in sorted({r["budget"] for r in curve_rows}):
        by_point = [at_step(curve_rows, step, key, archs, budget) for _, step, _ in points]
        final = by_point[-1]
        if len(final) < 2:
            continue
        leader = _ranking(final)[0]
        leaders = [_ranking(p)[0] if p else "-" for p in by_point]
        for other in (a for a in archs if a in final and a != leader):
            cells, gaps = [], []
            for here in by_point:
                if leader in here and other in here:
                    d = noise.difference(here[other], here[leader])
                    gaps.append(d.delta)
                    ratio = f", {d.ratio:.1f}x" if d.estimated else ""
                    cells.append(f"{d.delta:+.3f}{ratio}")
                else:
                    cells.append("-")
            lines.append(f"| {count_label(budget)} | {other} - {leader} | {' | '.join(cells)} | {_trend(gaps)} |")
        notes.append(f"- {count_label(budget)}: leader at each checkpoint: "
                     + ", ".join(f"{f:.0%} {who}" for (f, _, _), who in zip(points, leaders, strict=True)) + ".")
    if len(lines) == 2:
        return []
    return [*lines, "", *notes]


def curve_tables(curve_rows: list[dict[str, Any]], archs: Sequence[str], fractions: Sequence[float],
                 text: str = VALID, margin: float = DEFAULT_MARGIN) -> list[str]:
    """Mean ± std of the loss on ``text`` at each fraction of the training, per (arch, budget), and the
    tokens at which each seed first fell ``margin`` nats below its unigram loss."""
    points = checkpoint_steps(curve_rows, fractions)
    key = loss_key(text)
    head = " | ".join(f"{f:.0%} ({tokens:,} tokens)" for f, _, tokens in points)
    lines = [f"| arch | budget | {head} | first {margin:g} below unigram (tokens, per seed) |",
             "|---|---|" + "---|" * len(points) + "---|"]
    for budget in sorted({r["budget"] for r in curve_rows}):
        for arch in archs:
            mine = [r for r in curve_rows if r["arch"] == arch and r["budget"] == budget]
            if not mine:
                continue
            cells = []
            for _, step, _ in points:
                seeds = at_step(curve_rows, step, key, [arch], budget).get(arch)
                cells.append(_pm(seeds.mean, seeds.std) if seeds else "-")
            exits = []
            for seed in sorted({r["seed"] for r in mine}):
                seed_rows = sorted((r for r in mine if r["seed"] == seed), key=lambda r: r["step"])
                curve = Curve.of(f"s{seed}", seed_rows, text)
                i = plateau_exit(curve, margin)
                exits.append(f"s{seed}: " + ("not reached" if i is None else f"{curve.tokens[i]:,}"))
            lines.append(f"| {arch} | {count_label(budget)} | {' | '.join(cells)} | {', '.join(exits)} |")
    return lines


# -- the report ----------------------------------------------------------------------------------------
def render(rows: list[dict[str, Any]], curve_rows: list[dict[str, Any]], spec: CompareSpec, sources: str) -> str:
    """``results.md``: the preamble (``sources``: where each architecture's hyperparameters came from),
    the table, the verdicts per budget, and with learning curves the along-training tables."""
    names = list(spec.eval_texts)
    groups = aggregate(rows, names)
    seeds = ", ".join(map(str, spec.seeds))
    curves = len(checkpoint_steps(curve_rows, (HALF, 1.0))) == 2  # more than one evaluation per run
    ood = "".join(f" Out of domain: {name} ({path}), every token of it scored with fixed masks at every evaluation; "
                  f"its unigram baseline uses the training split's frequencies."
                  for name, path in spec.eval_texts.items())
    lines = [
        f"# {' vs '.join(a.upper() for a in spec.archs)} at equal parameter budgets",
        "",
        (f"Same data and {spec.token_budget:,} training tokens per run; seeds {seeds}. Each architecture runs "
         "at its own hyperparameters, the same at every budget (muP transfer from its base width): "
         f"{sources}; all values in spec.yaml. They are only as good as their tuning at the base width. "
         "Losses: masked-token cross-entropy (nats) on fixed validation / test batches, mean ± sample std over "
         "completed seeds; diverged runs are counted, not averaged. Params: total (embeddings included; "
         "non-embedding in the next column); FLOPs: training FLOPs per token x tokens (matrix products only, "
         f"probformer.sizing).{ood}"),
        "",
        ("| arch | budget | params | non-emb params | train FLOPs | valid loss | test loss | unigram loss "
         + "".join(f"| {n} loss | {n} unigram " for n in names) + "| completed | diverged |"),
        "|---|---|---:|---:|---:|---|---|---|" + "---|---|" * len(names) + "---:|---:|",
    ]
    for g in groups:
        diverged = f"**{g['diverged']}** (seed {', '.join(map(str, g['diverged_seeds']))})" if g["diverged"] else "0"
        ood_cells = "".join(f"| {_pm(g[k], g[k + '_std'])} | {_pm(g[u], math.nan)} "
                            for k, u in (loss_keys(n) for n in names))
        lines.append(f"| {g['arch']} | {count_label(g['budget'])} | {g['params']:,} | {g['non_embedding_params']:,} "
                     f"| {g['train_flops']:.3g} | {_pm(g['valid_loss'], g['valid_loss_std'])} "
                     f"| {_pm(g['test_loss'], g['test_loss_std'])} | {_pm(g['valid_unigram_loss'], float('nan'))} "
                     f"{ood_cells}| {g['completed']}/{g['seeds']} | {diverged} |")
    lines += ["", "## Lowest validation loss per budget", "", f"Seed noise: {noise.RULE}.", "",
              *verdicts(groups, along=along_training(curve_rows, spec.archs)), ""]
    in_domain = winners(groups, "valid_loss")
    for name in names:
        key = loss_key(name)
        theirs = winners(groups, key)
        agree = [f"{count_label(b)} {theirs[b]} (in domain {in_domain.get(b, '-')}: "
                 f"{'the same' if theirs[b] == in_domain.get(b) else 'different'})" for b in sorted(theirs)]
        lines += [f"## Lowest {name} loss per budget (out of domain)", "",
                  *verdicts(groups, key, name, along_training(curve_rows, spec.archs, name)), "",
                  f"Lowest mean {name} loss: {', '.join(agree) or 'no completed run'}.", ""]
    if curves:
        for text in [VALID, *names]:
            lines += [f"## Loss along training: {text}", "",
                      (f"Mean ± std over completed seeds at the evaluation closest to each fraction of the training; "
                       f"last column: the tokens seen when each seed's {text} loss first fell {DEFAULT_MARGIN:g} nats "
                       "below its unigram baseline (off the plateau every model starts on)."), "",
                      *curve_tables(curve_rows, spec.archs, spec.curve_fractions, text), ""]
            lead = lead_table(curve_rows, spec.archs, spec.curve_fractions, text)
            if lead:
                lines += [f"How far each architecture is behind the one that leads at the end ({text} loss, "
                          "mean difference in nats and its ratio to the seed noise; a gap whose ratio is at "
                          "most 2 is within the noise; negative: ahead at that point):", "", *lead, ""]
        lines += ["![learning curves](learning_curves.png)", ""]
    return "\n".join(lines)


# -- plots ---------------------------------------------------------------------------------------------
def plot_loss(rows: list[dict[str, Any]], x_key: str, path, spec: CompareSpec) -> dict[str, dict]:
    """Mean valid loss (error bars: seed std) against ``x_key`` ('params' or 'train_flops'), one line per
    architecture, log x. Diverged runs are drawn as crosses at the top edge. Returns what was drawn."""
    plt = pyplot()
    from matplotlib.transforms import blended_transform_factory

    groups = aggregate(rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    top = blended_transform_factory(ax.transData, ax.transAxes)
    drawn: dict[str, dict] = {}
    for i, arch in enumerate(spec.archs):
        mine = [g for g in groups if g["arch"] == arch]
        if not mine:
            continue
        color = f"C{i}"
        xs = [g[x_key] for g in mine]
        means = [g["valid_loss"] for g in mine]  # nan where every seed diverged: the line breaks there
        stds = [g["valid_loss_std"] if math.isfinite(g["valid_loss_std"]) else 0.0 for g in mine]
        ax.errorbar(xs, means, yerr=stds, color=color, marker="o", ms=4, capsize=3, label=arch)
        bad = [(g[x_key], g["diverged"]) for g in mine if g["diverged"]]
        for x, k in bad:
            ax.plot([x], [0.97], transform=top, marker="x", ms=9, mew=2, color=color, clip_on=False)
            ax.annotate(f"{arch}: {k} diverged", (x, 0.97), xycoords=top, xytext=(5, -3 - 10 * i),
                        textcoords="offset points", fontsize=7, color=color)
        drawn[arch] = {"x": xs, "mean": means, "std": stds, "diverged": bad}
    unigram = [g["valid_unigram_loss"] for g in groups if math.isfinite(g["valid_unigram_loss"])]
    if unigram:
        ax.axhline(float(np.mean(unigram)), color="gray", ls="--", lw=1, label="unigram baseline")
    if any(d["diverged"] for d in drawn.values()):
        ax.plot([], [], "x", color="black", mew=2, label="diverged run (top edge)")
    ax.set_xscale("log")
    ax.set_xlabel("parameters (total)" if x_key == "params" else "training FLOPs")
    ax.set_ylabel("validation MLM loss (nats)")
    ax.set_title(f"{spec.token_budget:,} tokens per run, {len(spec.seeds)} seed(s): mean ± std", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return drawn


def plot_learning_curves(curve_rows: list[dict[str, Any]], path, spec: CompareSpec) -> dict[tuple[str, int, str], dict]:
    """Loss against tokens seen (linear x): one panel per (text, budget) (rows: valid, then each eval
    text; columns: budgets), per architecture its seeds as thin lines and their mean as a thick one, the unigram
    baseline dashed. Returns what was drawn, keyed by (text, budget, arch)."""
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter  # matplotlib is optional: imported only to draw
    texts = [VALID, *spec.eval_texts]
    budgets = sorted({r["budget"] for r in curve_rows}) or spec.budgets
    fig, axes = plt.subplots(len(texts), len(budgets), figsize=(3.3 * len(budgets), 2.9 * len(texts)),
                             sharey="row", squeeze=False)
    drawn: dict[tuple[str, int, str], dict] = {}
    for row, text in enumerate(texts):
        key, unigram_key = loss_keys(text)
        for col, budget in enumerate(budgets):
            ax = axes[row][col]
            here = [r for r in curve_rows if r["budget"] == budget and math.isfinite(r.get(key, math.nan))]
            for i, arch in enumerate(spec.archs):
                mine = [r for r in here if r["arch"] == arch]
                if not mine:
                    continue
                color = f"C{i}"
                for seed in sorted({r["seed"] for r in mine}):
                    points = sorted((r for r in mine if r["seed"] == seed), key=lambda r: r["step"])
                    ax.plot([r["tokens"] for r in points], [r[key] for r in points], color=color, lw=0.7, alpha=0.45)
                steps = sorted({r["step"] for r in mine})
                tokens = [next(r["tokens"] for r in mine if r["step"] == s) for s in steps]
                mean = [float(np.mean([r[key] for r in mine if r["step"] == s])) for s in steps]
                ax.plot(tokens, mean, color=color, lw=2, marker="o", ms=2.5, label=arch)
                drawn[(text, budget, arch)] = {"tokens": tokens, "mean": mean,
                                               "seeds": len({r["seed"] for r in mine})}
            unigram = [r[unigram_key] for r in here if math.isfinite(r.get(unigram_key, math.nan))]
            if unigram:
                ax.axhline(float(np.mean(unigram)), color="gray", ls="--", lw=1, label="unigram")
            # linear: the evaluations are evenly spaced in tokens, and a log axis over one decade labels
            # its minor ticks on top of each other
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: count_label(round(x))))
            ax.set_xlim(left=0)
            ax.set_title(f"{count_label(budget)} params: {text}", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            if row == len(texts) - 1:
                ax.set_xlabel("tokens seen", fontsize=8)
            if col == 0:
                ax.set_ylabel(f"{text} loss (nats)", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Learning curves: mean over seeds (thick), each seed (thin); {spec.token_budget:,} tokens per run",
                 fontsize=10)
    save_figure(fig, path)
    return drawn


def markdown(rows: list[dict[str, Any]], spec: CompareSpec, curves: list[dict[str, Any]] = ()) -> str:
    """results.md (:func:`probformer.experiments.compare.report.render`) with where each lr came from."""
    sources = []
    for arch in spec.archs:
        lr = arch_settings(spec, arch)[1].get("lr", OptimConfig.lr)
        source = spec.hparams_from.get(arch, spec.hparams_source.get(arch))
        where = (f"hparams_from {source}" if source else "spec hparams" if arch in spec.hparams
                 else "trainer defaults")
        if arch in spec.lr_scale:
            where = f"{spec.lr_scale[arch]:g}x the lr of {where}"
        sources.append(f"{arch} lr {lr:g} ({where})")
    return render(rows, list(curves), spec, "; ".join(sources))


def summary_table(out_dir: str | Path) -> str:
    """results.md without its preamble: the table, the verdicts and the along-training tables."""
    text = (Path(out_dir) / "results.md").read_text()
    return text[text.index("| arch"):]
