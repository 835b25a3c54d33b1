"""The tasks, one module each, and the only list of them.

A task module holds its head model and `build_model`, its training `Task`, its API class and its
`s2s evaluate`:

    Task(config, run_dir, resume)   .model, .lengths (batching cost per example), .batch(indices),
                                    .validate(model, device) -> {name: score}; class attributes
                                    `metric` (the score that selects best.pt) and `higher_is_better`
    API class                       Translator | Tagger | Classifier | Forecaster: load(run_dir), predict, evaluate
    EVALUATE_FLAGS                  the `s2s evaluate` options the task takes besides the common ones
    evaluate(args) -> (scores, report lines)   `s2s evaluate` on a run of the task

Train, checkpoint, evaluate and the CLI look a task up here and never branch on its name. A new
head is a new module here, its config section in s2s/config.py, and a line below.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from s2s.errors import S2SError

TASKS = {
    "translation": "s2s.tasks.translation",
    "tagging": "s2s.tasks.tagging",
    "classification": "s2s.tasks.classification",
    "forecasting": "s2s.tasks.forecasting",
    "pretraining": "s2s.tasks.pretraining",
}


def get(name: str) -> ModuleType:
    """The module of task `name`, imported on first use (so `s2s --help` stays fast)."""
    if name not in TASKS:
        raise S2SError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return importlib.import_module(TASKS[name])
