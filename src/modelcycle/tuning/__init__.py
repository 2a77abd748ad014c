"""Hyper-parameter search: an Optuna study over the config's ``tune.space``. Each trial trains a copy of the
config with sampled values, reports its validation metric every epoch (the median pruner stops poor trials
early) and is recorded as a run; the study lives in the registry's database, so an interrupted search
resumes where it stopped, and several workers (processes, or Ray tasks) can share it; the best trial's
config is then trained once more and registered.

``space`` (the search space against the config) → ``trials`` (the study, a trial's objective, the loop each
worker runs) → ``workers`` (K worker processes or Ray tasks, and waiting for them) → ``search`` (``tune``)."""

from modelcycle.tuning.search import TuneResult, tune
from modelcycle.tuning.space import check_space, trial_config
from modelcycle.tuning.trials import run_worker, study_name, study_storage

__all__ = [
    "TuneResult",
    "check_space",
    "run_worker",
    "study_name",
    "study_storage",
    "trial_config",
    "tune",
]
