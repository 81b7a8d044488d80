"""Hyperparameter sweeps: an Optuna study whose trials are training runs (docs/design.md §7).

A sweep spec (YAML, see ``experiments/specs/sweep-*.yaml``) names a partial
:class:`~probformer.config.TrainConfig` (``train``: the model at the width being tuned, the data, a
fixed ``token_budget``) and a search space over dotted TrainConfig keys::

    study_name: pt-mup-n128
    out_dir: runs/sweep-pt            # trials/<n>/ run dirs, study.db, trials.csv, best.json
    storage: null                     # null: sqlite:///<out_dir>/study.db; or any SQLAlchemy URL
    sampler: tpe                      # tpe | random | grid (grid: every combination of the lists)
    n_trials: 20                      # trials the study should hold (finished ones count, across workers)
    train: {model: {arch: pt, hidden_size: 128}, token_budget: 163840, ...}
    search_space:
      optim.lr: {low: 1.0e-4, high: 1.0e-1, log: true}    # float (int with ``type: int`` or int bounds)
      model.output_mult: [0.5, 1.0, 2.0]                    # a list: categorical (grid: the grid values)
      optim.weight_decay: {choices: [0.0, 0.01, 0.1]}
    enqueue:                          # optional: points tried first (once per study), e.g. the defaults
      - {optim.lr: 2.0e-2, model.output_mult: 1.0, optim.weight_decay: 0.0}

Every trial trains with :func:`probformer.training.trainer.train` into ``out_dir/trials/<n>`` and
reports its final ``valid_loss`` (minimised). A diverged run is a FAILED trial whose user attribute
``fail_reason`` says why; the study goes on. The study lives in the storage, so

* several processes (or machines sharing one database URL) can run trials of one study at once;
* a study interrupted mid-trial and started again keeps every finished trial. The interrupted trial
  is put back in the queue with the same parameters and resumes from its last checkpoint: at once
  after Ctrl-C, and after ``grace_period`` seconds without a heartbeat when the worker was killed.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probformer.config import ConfigError, TrainConfig, config_from_dict
from probformer.experiments import spec as specs
from probformer.experiments.reports import write_csv, write_json

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("none", "median")
# The trial parameters that go into best.json, the point ``probformer transfer`` and ``compare`` reuse.
TRANSFERABLE_SECTIONS = ("optim", "model")
STORAGE_ATTEMPTS = 5  # opening the storage, while another worker may be creating its schema
# Trial user attributes (a stable, documented interface: lr-curves and transfer read them).
ATTR_FAIL_REASON, ATTR_RESUME_OF, ATTR_RETRY_OF, ATTR_WORKER = "fail_reason", "resume_of", "retry_of", "worker"


class TrialDiverged(RuntimeError):
    """A trial's training run diverged (non-finite loss); optuna records the trial as FAILED."""


def require_optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError("sweeps need optuna: pip install 'probformer[sweep]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# -- search space ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchParam:
    """One searched TrainConfig key: a numeric range or a list of choices."""

    name: str  # dotted TrainConfig key, e.g. optim.lr, model.output_mult, seed
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False
    choices: tuple[Any, ...] | None = None

    @classmethod
    def parse(cls, name: str, raw: Any) -> SearchParam:
        where = f"search_space.{name}"
        if isinstance(raw, list):
            raw = {"choices": raw}
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected {{low, high[, log, step, type]}}, {{choices: [...]}} or a list, "
                              f"got {raw!r}")
        unknown = set(raw) - {"low", "high", "log", "step", "type", "choices"}
        if unknown:
            raise ConfigError(f"{where}: unknown key {min(unknown)!r}; allowed: low, high, log, step, type, "
                              "choices")
        if "choices" in raw:
            choices = raw["choices"]
            if not isinstance(choices, list) or not choices or set(raw) != {"choices"}:
                raise ConfigError(f"{where}: choices must be a non-empty list (and alone), got {choices!r}")
            return cls(name, choices=tuple(choices))
        if "low" not in raw or "high" not in raw:
            raise ConfigError(f"{where}: a range needs low and high")
        kind = raw.get("type", "int" if all(isinstance(raw[k], int) for k in ("low", "high")) else "float")
        if kind not in ("int", "float"):
            raise ConfigError(f"{where}.type: expected int or float, got {kind!r}")
        try:
            low, high = float(raw["low"]), float(raw["high"])
            step = None if raw.get("step") is None else float(raw["step"])
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: low, high and step must be numbers, got {raw!r}") from None
        log = bool(raw.get("log", False))
        if not low < high or (log and low <= 0) or (step is not None and step <= 0):
            raise ConfigError(f"{where}: need low < high (and low > 0 with log, step > 0), got {raw!r}")
        if log and step is not None:
            raise ConfigError(f"{where}: log and step cannot be combined")
        return cls(name, low, high, log, step, kind == "int")

    def suggest(self, trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def contains(self, value: Any) -> bool:
        """Whether ``suggest`` could return ``value`` (a choice, or a number in range, integer and on the step)."""
        if self.choices is not None:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not self.low <= value <= self.high:
            return False
        if self.integer and not float(value).is_integer():
            return False
        k = None if self.step is None else (value - self.low) / self.step
        return k is None or abs(k - round(k)) < 1e-6  # a float step (1e-3) never divides exactly

    @property
    def example(self) -> Any:
        if self.choices is not None:
            return self.choices[0]
        return int(self.low) if self.integer else self.low


def set_dotted(values: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """``values`` with the nested entry at dotted ``key`` set to ``value`` (a new dict, input untouched)."""
    head, _, rest = key.partition(".")
    if not rest:
        return {**values, head: value}
    child = values.get(head)
    return {**values, head: set_dotted(child if isinstance(child, dict) else {}, rest, value)}


def nested(params: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted ``{"optim.lr": 1e-2}`` -> ``{"optim": {"lr": 1e-2}}``."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        out = set_dotted(out, key, value)
    return out


# -- spec ------------------------------------------------------------------------------------------
@dataclass
class SweepSpec:
    search_space: dict[str, Any]
    train: dict[str, Any] = field(default_factory=dict)  # partial TrainConfig shared by every trial
    study_name: str = "sweep"
    out_dir: str = "runs/sweep"
    storage: str | None = None  # SQLAlchemy URL; None: sqlite:///<out_dir>/study.db
    sampler: str = "tpe"
    sampler_seed: int = 0
    n_trials: int | None = 20  # grid: None means the whole grid
    pruner: str = "none"  # median: stop a trial whose intermediate valid loss is worse than the median
    heartbeat_interval: int = 20  # seconds between a running trial's heartbeats
    grace_period: int = 60  # a RUNNING trial without a heartbeat for this long is stale: failed and re-queued
    # Points to try first (e.g. the defaults, or a point known to be good), each {dotted key: value} over
    # search_space keys (missing ones are sampled); each is tried once per study (skip_if_exists; two
    # workers started at the same instant may both add it). They count towards n_trials, except that one
    # added to a study that is already full runs in addition. Not with the grid sampler (it would not
    # count the enqueued point as visited).
    enqueue: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.search_space, dict) or not self.search_space:
            raise ConfigError("search_space: expected a non-empty mapping of dotted TrainConfig keys")
        if not isinstance(self.train, dict):
            raise ConfigError(f"train: expected a mapping (a partial TrainConfig), got {self.train!r}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler: expected one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"pruner: expected one of {', '.join(PRUNERS)}, got {self.pruner!r}")
        if self.n_trials is not None and (not isinstance(self.n_trials, int) or self.n_trials < 1):
            raise ConfigError(f"n_trials: expected an integer >= 1 or null, got {self.n_trials!r}")
        if self.n_trials is None and self.sampler != "grid":
            raise ConfigError("n_trials: required unless sampler is grid")
        if self.heartbeat_interval < 1 or self.grace_period <= self.heartbeat_interval:
            raise ConfigError("heartbeat_interval must be >= 1 s and grace_period longer than it")
        if "out_dir" in self.train:
            raise ConfigError("train.out_dir: set by the sweep (out_dir/trials/<n>); use the spec's out_dir")
        self.params = [SearchParam.parse(k, v) for k, v in self.search_space.items()]
        if self.sampler == "grid" and any(p.choices is None for p in self.params):
            raise ConfigError("sampler grid: every search_space entry must be a list of values")
        # A typo in a key or a value of the wrong type fails here, not after hours of trials.
        self.trial_config({p.name: p.example for p in self.params}, "check")
        self._check_enqueue()

    def _check_enqueue(self) -> None:
        if not isinstance(self.enqueue, list) or not all(isinstance(e, dict) and e for e in self.enqueue):
            raise ConfigError(f"enqueue: expected a list of {{search_space key: value}} mappings, got {self.enqueue!r}")
        if self.enqueue and self.sampler == "grid":
            raise ConfigError("enqueue: not with sampler grid (the grid already tries every listed point)")
        by_name = {p.name: p for p in self.params}
        for i, point in enumerate(self.enqueue):
            for key, value in point.items():
                param = by_name.get(key)
                if param is None:
                    raise ConfigError(f"enqueue[{i}].{key}: not a search_space key ({', '.join(by_name)})")
                if not param.contains(value):
                    allowed = (list(param.choices) if param.choices is not None else f"[{param.low:g}, {param.high:g}]")
                    raise ConfigError(f"enqueue[{i}].{key}: {value!r} is outside the search space {allowed}")
            self.trial_config({**{p.name: p.example for p in self.params}, **point}, "check")

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.out_dir).resolve() / 'study.db'}"

    @property
    def grid(self) -> dict[str, list[Any]]:
        return {p.name: list(p.choices) for p in self.params}

    @property
    def planned_trials(self) -> int:
        if self.sampler == "grid":
            size = math.prod(len(p.choices) for p in self.params)
            return size if self.n_trials is None else min(size, self.n_trials)
        return self.n_trials

    def trial_config(self, params: Mapping[str, Any], key: str | int) -> TrainConfig:
        values = self.train
        for name, value in params.items():
            values = set_dotted(values, name, value)
        values = {**values, "out_dir": str(Path(self.out_dir) / "trials" / str(key))}
        try:
            return config_from_dict(values)
        except ConfigError as err:
            raise ConfigError(f"sweep trial config: {err}") from None


def sweep_preset_names() -> list[str]:
    return specs.preset_names("sweep")


def load_sweep_spec(path: str | Path | None = None, preset: str | None = None, overrides: Sequence[str] = (),
                    **explicit: Any) -> SweepSpec:
    """A preset, then a YAML file, then ``key=value`` overrides, then explicit CLI values (not None)."""
    return specs.load_spec(SweepSpec, "sweep", path, preset, overrides, explicit)


# -- study -----------------------------------------------------------------------------------------
def trial_key(trial) -> int:
    """The run directory number of a trial: a re-queued trial continues its original's directory."""
    return int(trial.user_attrs.get(ATTR_RESUME_OF, trial.number))


def requeued_numbers(study) -> set[int]:
    """Numbers of the interrupted trials that have been queued again (a finished trial is read-only,
    so the mark lives on the retry: its ``retry_of``)."""
    return {int(t.user_attrs[ATTR_RETRY_OF]) for t in study.get_trials(deepcopy=False) if ATTR_RETRY_OF in t.user_attrs}


def requeue(study, trial) -> None:
    """Queue an interrupted (failed without a reason) trial again, once, with its parameters and its
    sampler bookkeeping (the grid sampler's grid id), so that it resumes from its run dir's checkpoint."""
    optuna = require_optuna()
    if trial.user_attrs.get(ATTR_FAIL_REASON) or trial.number in requeued_numbers(study):
        return
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={ATTR_RESUME_OF: trial_key(trial), ATTR_RETRY_OF: trial.number},
        system_attrs=dict(trial.system_attrs)))


def counts_as_done(trial) -> bool:
    """Finished for good: complete, pruned, or failed for a reason (diverged, an error). A trial that
    failed without a reason was interrupted: it is (or will be) re-queued and does not count."""
    state = trial.state.name
    return state in ("COMPLETE", "PRUNED") or (state == "FAIL" and bool(trial.user_attrs.get(ATTR_FAIL_REASON)))


def open_study(spec: SweepSpec, *, create: bool = True):
    """The spec's study (created, or loaded with every trial it holds)."""
    optuna = require_optuna()
    Path(spec.out_dir).mkdir(parents=True, exist_ok=True)
    url = spec.storage_url
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    # optuna >= 4.9 renamed failed_trial_callback; the heartbeat itself is marked experimental.
    callback = ("heartbeat_stale_trial_callback"
                if "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
                else "failed_trial_callback")
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(STORAGE_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                                     heartbeat_interval=spec.heartbeat_interval,
                                                     grace_period=spec.grace_period, **{callback: requeue})
            break
        except (IntegrityError, OperationalError):
            # Two workers started together on a new database both create optuna's schema; the loser's
            # alembic stamp fails (UNIQUE constraint on alembic_version; seen in the two-worker test).
            # By the next attempt the schema exists and opening it is a no-op.
            if attempt == STORAGE_ATTEMPTS - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    if spec.sampler == "grid":
        sampler = optuna.samplers.GridSampler(spec.grid, seed=spec.sampler_seed)
    else:  # seeded per trial number, so workers sharing the study do not propose the same points
        from probformer.experiments import trial_seeded_sampler

        sampler = (trial_seeded_sampler.random if spec.sampler == "random" else trial_seeded_sampler.tpe)(
            spec.sampler_seed)
    pruner = optuna.pruners.MedianPruner(n_warmup_steps=1) if spec.pruner == "median" else optuna.pruners.NopPruner()
    if not create:
        try:
            return optuna.load_study(study_name=spec.study_name, storage=storage, sampler=sampler, pruner=pruner)
        except KeyError:
            raise ConfigError(f"no study {spec.study_name!r} in {url}") from None
    return optuna.create_study(study_name=spec.study_name, storage=storage, sampler=sampler, pruner=pruner,
                               direction="minimize", load_if_exists=True)


def recover_interrupted(study) -> None:
    """Re-queue trials a previous worker left behind: Ctrl-C'd ones now, killed ones once stale."""
    from optuna.storages import fail_stale_trials

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", require_optuna().exceptions.ExperimentalWarning)
        fail_stale_trials(study)  # heartbeat older than grace_period -> FAIL -> requeue (the storage callback)
    for trial in study.get_trials(deepcopy=False):
        if trial.state.name == "FAIL" and not trial.user_attrs.get(ATTR_FAIL_REASON):
            requeue(study, trial)  # interrupted (Ctrl-C, or a crash that left no reason)


def run_trial(spec: SweepSpec, trial, train_fn: Callable[..., dict[str, Any]], log=print) -> float:
    """Train one trial's config (resuming its run dir if it holds a checkpoint) and return valid loss."""
    optuna = require_optuna()
    from probformer.experiments.runs import resume_arguments

    params = {p.name: p.suggest(trial) for p in spec.params}
    key = trial_key(trial)
    config = spec.trial_config(params, key)
    trial.set_user_attr(ATTR_WORKER, f"{socket.gethostname()}:{os.getpid()}")
    trial.set_user_attr("out_dir", config.out_dir)

    def report(step: int, metrics: dict[str, float]) -> None:
        trial.report(metrics["loss"], step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"valid loss {metrics['loss']:.4f} at step {step} is worse than the median")

    how = resume_arguments(Path(config.out_dir))  # its checkpoint, if a killed worker left one
    log(f"trial {trial.number} (run dir {key}{', resuming' if how['resume'] else ''}): "
        + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()))
    try:
        result = train_fn(config, **how, on_eval=report if spec.pruner != "none" else None, log=log)
    except (KeyboardInterrupt, optuna.TrialPruned):
        raise  # interrupted: re-queued by the next start (recover_interrupted); pruned: optuna records it
    except Exception as err:
        trial.set_user_attr(ATTR_FAIL_REASON, f"error: {type(err).__name__}: {err}")
        raise
    for name in ("valid_loss", "valid_accuracy", "test_loss", "valid_unigram_loss", "tokens_per_second", "step"):
        if result.get(name) is not None:
            trial.set_user_attr(name, result[name])
    if result["status"] != "completed":
        reason = str(result.get("reason", result["status"]))
        trial.set_user_attr(ATTR_FAIL_REASON, f"diverged: {reason}")
        raise TrialDiverged(reason)
    return float(result["valid_loss"])


def run_sweep(spec: SweepSpec, *, train_fn: Callable[..., dict[str, Any]] | None = None, log=print,
              wait: bool = True):
    """Run trials until the study holds ``spec.planned_trials`` finished ones; return the study.

    With ``wait=False``, return once nothing is left to start even if other workers still hold
    trials (``probformer lr-curves`` moves on to its next study and comes back later)."""
    require_optuna()
    if train_fn is None:
        from probformer.training.trainer import train as train_fn
    study = open_study(spec)
    _check_same_search_space(study, spec)
    study.set_user_attr("spec", specs.spec_values(spec))
    for point in spec.enqueue:  # skip_if_exists: once per study, also when the command is run again
        study.enqueue_trial(point, skip_if_exists=True)
    target = spec.planned_trials

    def tally() -> tuple[int, int, int]:
        trials = study.get_trials(deepcopy=False)
        return (sum(counts_as_done(t) for t in trials), sum(t.state.name == "RUNNING" for t in trials),
                sum(t.state.name == "WAITING" for t in trials))

    def stop_when_full(study_, _trial) -> None:
        done, running, waiting = tally()
        if done + running >= target and not waiting:
            study_.stop()

    while True:
        recover_interrupted(study)
        done, running, waiting = tally()
        to_start = max(target - done - running, waiting)
        if to_start > 0:
            log(f"study {spec.study_name}: {done}/{target} trials finished, {running} running elsewhere; "
                f"starting {to_start}")
            study.optimize(lambda t: run_trial(spec, t, train_fn, log), n_trials=to_start, catch=(TrialDiverged,),
                           callbacks=[stop_when_full], gc_after_trial=True)
            continue
        if running == 0 or not wait:
            break
        # Another worker's trial, or one a killed worker left RUNNING: it finishes, or its heartbeat
        # goes stale after grace_period and recover_interrupted re-queues it for us.
        log(f"study {spec.study_name}: {done}/{target} finished; waiting for {running} running trial(s)")
        time.sleep(spec.heartbeat_interval)
    write_results(study, spec)
    return study


def _check_same_search_space(study, spec: SweepSpec) -> None:
    stored = study.user_attrs.get("spec")
    if stored and stored.get("search_space") != json.loads(json.dumps(spec.search_space, default=str)):
        raise ConfigError(f"study {spec.study_name!r} in {spec.storage_url} was created with another search_space; "
                          "use another study_name (or out_dir)")


# -- results ---------------------------------------------------------------------------------------
def trial_rows(study) -> list[dict[str, Any]]:
    rows, requeued = [], requeued_numbers(study)
    for t in study.get_trials(deepcopy=False):
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "run_dir": trial_key(t),
                     **{f"param:{k}": v for k, v in t.params.items()},
                     "fail_reason": t.user_attrs.get(ATTR_FAIL_REASON, ""),
                     "requeued": t.number in requeued,
                     "test_loss": t.user_attrs.get("test_loss"), "worker": t.user_attrs.get(ATTR_WORKER, ""),
                     "duration_s": t.duration.total_seconds() if t.duration else None})
    return rows


def best_point(study, spec: SweepSpec) -> dict[str, Any] | None:
    """The best complete trial as ``{"optim": ..., "model": ..., ...}`` (the best.json format)."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    point = nested(best.params)
    out = {section: point.get(section, {}) for section in TRANSFERABLE_SECTIONS}
    config = spec.trial_config(best.params, trial_key(best))
    out["model"] = {"arch": config.model["arch"], **out["model"]}
    out.update(value=best.value, trial=best.number, study=spec.study_name, storage=spec.storage_url,
               params=dict(best.params), base_model=config.model)
    return out


def write_results(study, spec: SweepSpec) -> dict[str, Path]:
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"trials": write_csv(out / "trials.csv", trial_rows(study))}
    best = best_point(study, spec)
    if best is not None:
        paths["best"] = write_json(out / "best.json", best)
    specs.write_spec(spec, out / "spec.yaml")
    return paths


def summary(study) -> str:
    rows = trial_rows(study)
    states: dict[str, int] = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    lines = [f"study {study.study_name}: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))]
    for r in sorted((r for r in rows if r["value"] is not None), key=lambda r: r["value"])[:5]:
        params = ", ".join(f"{k[6:]}={v:g}" if isinstance(v, float) else f"{k[6:]}={v}"
                           for k, v in r.items() if k.startswith("param:"))
        lines.append(f"  trial {r['number']:>3}: valid loss {r['value']:.4f}  {params}")
    for r in (r for r in rows if r["fail_reason"]):
        lines.append(f"  trial {r['number']:>3}: FAILED ({r['fail_reason']})")
    return "\n".join(lines)
