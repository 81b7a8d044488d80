"""``parse-eval``: PT's trees scored against a treebank's gold heads, with an honest selection.

Every (iteration, channel, decoder) reading is scored on the report file. A single "PT UAS" number
needs one reading chosen, and choosing it on the file it is reported on overstates it: the reading
is chosen on another file (``select_on``) or on the first ``select_first`` sentences of the file,
which are then left out of the report. The gold words are fed to the model pre-split.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from probformer.data.conllu import Sentence, read_conllu
from probformer.figures import PICTURE_DPI, pyplot, save_figure
from probformer.inspection.attachment import Row, best_row, find_row, score_baselines, score_model
from probformer.inspection.errors import InspectionError
from probformer.inspection.loading import LoadedModel
from probformer.inspection.words import infer_word_marginals


@dataclass
class TreebankScores:
    source: str  # file (and sentence range) the rows were computed on
    sentences: int
    rows: list[Row]  # model readings
    baselines: list[Row]


@dataclass
class ParseEvalReport:
    report: TreebankScores
    selection: TreebankScores | None  # where readings are chosen (None: no selection asked)

    def chosen(self, metric: str = "uas") -> tuple[Row, Row]:
        """The reading with the best ``metric`` on the selection sentences: (its row there, its row
        on the report sentences). The one selection rule of every table and plot."""
        if self.selection is None:
            raise InspectionError("no selection sentences: give --select-on or --select-first")
        best = best_row(self.selection.rows, metric)
        return best, find_row(self.report.rows, best.iteration, best.channel, best.decoder)

    @property
    def selected(self) -> Row | None:
        """The reading chosen by UAS, on the report sentences."""
        return self.chosen()[1] if self.selection is not None else None

    @property
    def selected_on(self) -> Row | None:
        """The reading chosen by UAS, on the selection sentences."""
        return self.chosen()[0] if self.selection is not None else None

    def to_dict(self) -> dict:
        def scores(s: TreebankScores | None) -> dict | None:
            if s is None:
                return None
            return {"source": s.source, "sentences": s.sentences, "rows": [r.to_dict() for r in s.rows],
                    "baselines": [r.to_dict() for r in s.baselines]}
        return {"report": scores(self.report), "selection": scores(self.selection),
                "selected": self.selected.to_dict() if self.selected else None,
                "selected_on_selection": self.selected_on.to_dict() if self.selected_on else None}


def report_from_dict(data: dict) -> ParseEvalReport:
    """The inverse of :meth:`ParseEvalReport.to_dict` (to reuse a saved result)."""
    def scores(d: dict | None) -> TreebankScores | None:
        if d is None:
            return None
        return TreebankScores(d["source"], d["sentences"], [Row(**r) for r in d["rows"]],
                              [Row(**r) for r in d["baselines"]])
    return ParseEvalReport(scores(data["report"]), scores(data["selection"]))


def score_treebank(loaded: LoadedModel, sentences: Sequence[Sentence], source: str, batch_size: int = 32,
                   progress: bool = True, seed: int = 0) -> TreebankScores:
    if not sentences:
        raise InspectionError(f"{source}: no sentences to score")
    with tqdm(total=len(sentences), desc=f"marginals {Path(source).name}", unit="sent", disable=not progress,
              dynamic_ncols=True) as bar:
        marginals = infer_word_marginals(loaded.model, loaded.tokenizer, [s.words for s in sentences], batch_size,
                                         progress=bar.update)
    with tqdm(total=len(sentences), desc="trees", unit="sent", disable=not progress, dynamic_ncols=True) as bar:
        rows = score_model(sentences, marginals, progress=bar.update)
    return TreebankScores(source, len(sentences), rows, score_baselines(sentences, seed))


def parse_eval(loaded: LoadedModel, file: str | Path, select_on: str | Path | None = None,
               select_first: int | None = None, batch_size: int = 32, progress: bool = True) -> ParseEvalReport:
    if select_on is not None and select_first is not None:
        raise InspectionError("choose the reading on another file (--select-on) or on the first sentences of this "
                              "one (--select-first), not both")
    sentences = read_conllu(file)
    selection_sentences, selection_source = None, None
    if select_on is not None:
        if Path(select_on).resolve() == Path(file).resolve():
            raise InspectionError("--select-on names the file being reported: a reading chosen on the file it is "
                                  "reported on overstates it; use another file or --select-first")
        selection_sentences, selection_source = read_conllu(select_on), str(select_on)
    elif select_first is not None:
        if not 0 < select_first < len(sentences):
            raise InspectionError(f"--select-first must be between 1 and {len(sentences) - 1} "
                                  f"({file} has {len(sentences)} sentences), got {select_first}")
        selection_sentences, selection_source = sentences[:select_first], f"{file} [sentences 1-{select_first}]"
        sentences = sentences[select_first:]
        file = f"{file} [sentences {select_first + 1}-{select_first + len(sentences)}]"
    report = score_treebank(loaded, sentences, str(file), batch_size, progress)
    if selection_sentences is None:
        return ParseEvalReport(report, None)
    return ParseEvalReport(report, score_treebank(loaded, selection_sentences, selection_source, batch_size, progress))


def _table(rows: Sequence[Row]) -> list[str]:
    lines = ["| reading | UAS (no punct) | UAS (all) | undirected (no punct) |", "|---|---|---|---|"]
    lines += [f"| {r.name} | {r.uas:.3f} | {r.uas_all:.3f} | {r.undirected:.3f} |" for r in rows]
    return lines


def markdown(result: ParseEvalReport) -> str:
    """The report as Markdown: the selected reading against the baselines, then every reading."""
    r = result.report
    lines = [f"Treebank: {r.source}, {r.sentences} sentences, {r.rows[0].words} words "
             f"({r.rows[0].scored_words} without punctuation).", ""]
    if result.selected is not None:
        s = result.selection
        lines += [f"Reading chosen on {s.source} ({s.sentences} sentences) by UAS without punctuation: "
                  f"**{result.selected.name}** ({result.selected_on.uas:.3f} there). On the report sentences:", ""]
        lines += _table([result.selected, *r.baselines])
        by_undirected, reported = result.chosen("undirected")
        lines += ["", f"Chosen the same way by undirected UAS: **{reported.name}** "
                      f"({by_undirected.undirected:.3f} there), "
                      f"undirected {reported.undirected:.3f} on the report sentences (baselines: "
                      + ", ".join(f"{b.name} {b.undirected:.3f}" for b in r.baselines) + ")."]
    else:
        lines += ["No reading was selected (give --select-on or --select-first): the table below lists every "
                  "reading, and its best row was chosen on the same sentences it is scored on.", ""]
        lines += _table(r.baselines)
    lines += ["", "Every reading (iteration, channel `c0`.. or `cmean` = channels averaged, decoder):", ""]
    lines += _table(r.rows)
    return "\n".join(lines) + "\n"


def plot_uas(result: ParseEvalReport, path: Path) -> Path:
    """UAS (no punct) against MFVI iteration, one line per channel and decoder, baselines dashed."""
    plt = pyplot()

    rows = result.report.rows
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    readings = sorted({(r.channel, r.decoder) for r in rows}, key=lambda cd: (cd[1], cd[0]))
    colours = plt.get_cmap("tab10")
    channels = sorted({r.channel for r in rows}, key=lambda c: (c == "mean", c))
    for channel, decoder in readings:
        line = sorted((r for r in rows if (r.channel, r.decoder) == (channel, decoder)), key=lambda r: r.iteration)
        ax.plot([r.iteration for r in line], [r.uas for r in line], marker="o",
                linestyle="-" if decoder == "mst" else ":", color=colours(channels.index(channel)),
                label=f"channel {channel}, {decoder}")
    for k, base in enumerate(result.report.baselines):
        ax.axhline(base.uas, color="grey", linestyle=("--", "-.", (0, (1, 3)))[k % 3], linewidth=1)
        ax.annotate(base.name, (1.0, base.uas), xycoords=("axes fraction", "data"), fontsize=7, va="bottom",
                    ha="right", color="grey")
    ax.set_xlabel("MFVI iteration")
    ax.set_ylabel("UAS without punctuation")
    ax.set_xticks(sorted({r.iteration for r in rows}))
    ax.set_title(f"PT trees vs gold heads: {Path(result.report.source.split(' [')[0]).name}", fontsize=9)
    ax.legend(fontsize=6, ncol=2, loc="best")
    return save_figure(fig, path, dpi=PICTURE_DPI)


# -- along a run: how the trees form with training ---------------------------------------------------

SNAPSHOT_PREFIX = "step-"


def run_models(run: str | Path, steps: Sequence[int] | None) -> list[tuple[int, Path]]:
    """(step, model directory) for the requested snapshot steps of a run (None: all) plus its final model."""
    run = Path(run)
    snapshot_dir = run / "snapshots"
    available = {int(p.name[len(SNAPSHOT_PREFIX):]): p for p in sorted(snapshot_dir.glob(f"{SNAPSHOT_PREFIX}*"))} \
        if snapshot_dir.is_dir() else {}
    final = []
    if (run / "model" / "config.json").is_file() and (run / "summary.json").is_file():
        final = [(int(json.loads((run / "summary.json").read_text())["step"]), run / "model")]
    wanted = sorted(available) if steps is None else list(steps)
    missing = [s for s in wanted if s not in available and not (final and final[0][0] == s)]
    if missing:
        raise InspectionError(f"{run}: no snapshot for step(s) {missing}; have {sorted(available)} "
                              f"(train with --set snapshot_interval=K)" + (f" and the final model at {final[0][0]}"
                                                                            if final else ""))
    chosen = [(s, available[s]) for s in wanted if s in available]
    return sorted(set(chosen) | set(final))


def along_run_markdown(results: Sequence[tuple[int, ParseEvalReport]], tokens_per_step: int | None,
                       valid_loss: dict[int, float] | None = None) -> str:
    """One row per model of the run; ``valid_loss`` (step -> the run's validation MLM loss) beside it."""
    valid_loss = valid_loss or {}
    first = results[0][1]
    lines = [f"Report sentences: {first.report.source}; reading chosen per model on {first.selection.source}.", "",
             "| step | tokens | valid MLM loss | reading chosen by UAS | UAS (no punct) | UAS (all) | undirected | "
             "reading chosen by undirected: undirected |",
             "|---|---|---|---|---|---|---|---|"]
    for step, result in results:
        s = result.selected
        _, undirected = result.chosen("undirected")  # the same rule for the undirected score
        tokens = f"{step * tokens_per_step / 1e6:.2f}M" if tokens_per_step else "?"
        loss = f"{valid_loss[step]:.3f}" if step in valid_loss else "?"
        lines.append(f"| {step} | {tokens} | {loss} | {s.name} | {s.uas:.3f} | {s.uas_all:.3f} | {s.undirected:.3f} | "
                     f"{undirected.name}: {undirected.undirected:.3f} |")
    lines += ["", "Baselines on the same sentences: " + "; ".join(
        f"{b.name}: UAS {b.uas:.3f}, undirected {b.undirected:.3f}" for b in first.report.baselines) + "."]
    return "\n".join(lines) + "\n"


def plot_along_run(results: Sequence[tuple[int, ParseEvalReport]], path: Path) -> Path:
    plt = pyplot()

    steps = [step for step, _ in results]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(steps, [r.selected.uas for _, r in results], marker="o", color="C0",
            label="PT: UAS (reading chosen by UAS)")
    ax.plot(steps, [r.chosen("undirected")[1].undirected for _, r in results], marker="s", color="C1",
            label="PT: undirected (reading chosen by undirected)")
    baselines = results[0][1].report.baselines
    for base, style in zip(baselines, ("--", "-.", (0, (1, 3))), strict=False):
        ax.axhline(base.uas, color="C0", alpha=0.5, linestyle=style, linewidth=1)
        ax.annotate(f"{base.name}: UAS", (steps[0], base.uas), fontsize=7, va="bottom", color="C0", alpha=0.7)
    best_base = max(baselines, key=lambda b: b.undirected)
    ax.axhline(best_base.undirected, color="C1", alpha=0.5, linestyle="--", linewidth=1)
    ax.annotate(f"{best_base.name}: undirected", (steps[0], best_base.undirected), fontsize=7, va="bottom",
                color="C1", alpha=0.7)
    ax.set_xscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("attachment score, no punctuation")
    ax.set_title("PT trees along training (reading chosen on held-out sentences)", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=PICTURE_DPI)
