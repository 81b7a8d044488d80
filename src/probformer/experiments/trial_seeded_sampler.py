"""An Optuna sampler whose randomness for trial k comes from seed (sampler_seed, k).

Why: ``probformer sweep`` lets several workers share one study, each building its sampler from the
same spec, hence the same ``sampler_seed``. A plain ``TPESampler(seed=0)`` in each worker then draws
the same random start-up points (and, on the same history, the same TPE candidates): two workers
proposed identical trials 0/1, 2/3, ... (measured with two ``sweep-pt-n64-cpu`` workers). Seeding
per trial number keeps a single-worker study reproducible and makes concurrent workers (and a
restarted study) propose different points. TPE and random samplers read everything else from the
study's history, so one fresh sampler per trial loses nothing for them (not true of samplers that
keep state across trials, e.g. CMA-ES or the grid sampler, which is used unwrapped).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState


class TrialSeededSampler(BaseSampler):
    def __init__(self, factory: Callable[[int], BaseSampler], seed: int = 0) -> None:
        self._factory = factory  # seed -> sampler (e.g. lambda s: TPESampler(seed=s))
        self._seed = int(seed)
        self._per_trial: dict[int, BaseSampler] = {}

    def trial_seed(self, number: int) -> int:
        return (self._seed * 1_000_003 + number) % 2**32

    def _for(self, trial: FrozenTrial) -> BaseSampler:
        sampler = self._per_trial.get(trial.number)
        if sampler is None:
            sampler = self._per_trial[trial.number] = self._factory(self.trial_seed(trial.number))
        return sampler

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: list[float] | None) -> None:
        self._for(trial).after_trial(study, trial, state, values)
        self._per_trial.pop(trial.number, None)

    def reseed_rng(self) -> None:  # optuna calls this for n_jobs > 1 threads; per-trial seeds already differ
        pass


def tpe(seed: int) -> TrialSeededSampler:
    return TrialSeededSampler(lambda s: optuna.samplers.TPESampler(seed=s), seed)


def random(seed: int) -> TrialSeededSampler:
    return TrialSeededSampler(lambda s: optuna.samplers.RandomSampler(seed=s), seed)
