"""The paradigm-1 coordinate check with U, V at the *hidden* lr instead of their own (docs/results/coord-check.md,
"Paradigm 1"): the same check as

    probformer coord-check --arch pt --param mup --set model.head_paradigm=1 --threads 1 \
        --out results/coord_check/paradigm1

but with the lowrank group's lr factor set to the hidden group's, i.e. U, V at the effective Adam lr eta N0/N
instead of eta (N0/N)^(1/2) (parametrization.py's module doc says why the latter). From the repository root:

    python results/coord_check/paradigm1/hidden_lr_variant.py

writes results/coord_check/paradigm1/hidden-lr/pt-mup/.
"""

from __future__ import annotations

from pathlib import Path

import probformer.experiments.coord_check as coord_lib
from probformer.parametrization import build_optimizer

OUT = Path("results/coord_check/paradigm1/hidden-lr/pt-mup")


def hidden_lr_for_u_v(model, **kwargs):
    return build_optimizer(model, **kwargs, lowrank_lr_mult=kwargs["hidden_lr_mult"])


if __name__ == "__main__":
    coord_lib.build_optimizer = hidden_lr_for_u_v  # what coord_check's _one_run calls
    coord_lib.run_coord_check("pt", "mup", model_overrides={"head_paradigm": 1}, progress=False, num_threads=1,
                              out_dir=OUT)
    table = OUT / "slopes.md"
    lines = table.read_text().splitlines()
    lines.insert(1, "\nVariant (hidden_lr_variant.py): U, V at the hidden group's lr (effective eta N0/N), "
                    "not the lowrank role's (eta (N0/N)^(1/2)).")
    table.write_text("\n".join(lines) + "\n")
