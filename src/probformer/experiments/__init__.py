"""The experiment commands, on one scaffold.

Drivers (each a module with ``add_parser`` for the CLI and library functions a script can call):

- :mod:`~probformer.experiments.coord_check`: ``probformer coord-check``, activation scale against width;
- :mod:`~probformer.experiments.sweep`: ``probformer sweep``, an Optuna study whose trials are training runs
  (with :mod:`~probformer.experiments.trial_seeded_sampler`, so that workers sharing it differ);
- :mod:`~probformer.experiments.lr_curves`: ``probformer lr-curves``, loss against lr per width, SP and muP;
- :mod:`~probformer.experiments.transfer`: ``probformer transfer``, a sweep's best point at larger widths
  against its perturbations;
- :mod:`~probformer.experiments.compare`: ``probformer compare``, architectures at equal parameter budgets
  (its report, verdicts and plots in :mod:`~probformer.experiments.compare.report`);
- :mod:`~probformer.experiments.curves`: ``probformer curves``, validation loss against tokens seen for any
  runs, and when each leaves the unigram plateau.

Scaffold they share:

- :mod:`~probformer.experiments.spec`: spec YAML files (``specs/``: the bundled presets), ``--config`` /
  ``--preset`` / ``--set``, errors that name the bad key, ``spec.yaml`` out and back in;
- :mod:`~probformer.experiments.reports`: CSV tables and reading them back (``--rerender``), JSON, figures;
- :mod:`~probformer.experiments.noise`: the one seed-noise rule behind every verdict.
"""
