"""How big a model is and what it costs: parameters, training FLOPs per token, activation memory,
the micro-batch that fits a device, and the model at a parameter budget (docs/design.md section 6).

- :mod:`~probformer.sizing.budget`: parameter counts, FLOPs per token, :func:`config_for_budget`
- :mod:`~probformer.sizing.activation_memory`: bytes saved for backward, per term
- :mod:`~probformer.sizing.memory_fit`: the largest micro-batch that fits a device
- :mod:`~probformer.sizing.report`: the ``probformer size`` report (table or JSON)
- :mod:`~probformer.sizing.units`: ``10M``, ``24GiB`` and their labels
"""

from probformer.sizing.budget import config_for_budget, count_parameters, training_flops_per_token

__all__ = ["config_for_budget", "count_parameters", "training_flops_per_token"]
