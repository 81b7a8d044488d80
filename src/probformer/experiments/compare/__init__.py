"""Scaling comparison (docs/design.md section 7, the paper's Fig. 2): PT vs BERT vs UT at equal
parameter budgets.

- :mod:`~probformer.experiments.compare.spec`: what to compare (budgets, archs, seeds, tuned values)
- :mod:`~probformer.experiments.compare.plan`: the sized runs
- :mod:`~probformer.experiments.compare.run`: train or read back each run, write tables and plots
- :mod:`~probformer.experiments.compare.report`: results.md, verdicts against seed noise, plots
"""

from probformer.experiments.compare.plan import PlannedRun, check_eval_texts, plan_runs
from probformer.experiments.compare.report import aggregate, markdown, plot_learning_curves, plot_loss, summary_table
from probformer.experiments.compare.run import compare, execute, rerender, write_outputs
from probformer.experiments.compare.spec import CompareSpec, load_spec, parse_count, spec_from_dict

__all__ = ["CompareSpec", "PlannedRun", "aggregate", "check_eval_texts", "compare", "execute", "load_spec",
           "markdown", "parse_count", "plan_runs", "plot_learning_curves", "plot_loss", "rerender", "spec_from_dict",
           "summary_table", "write_outputs"]
