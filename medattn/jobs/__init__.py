"""Built-in jobs (train, test, explain, figure), registered through the same hook as any plugin.

A job component's factory is a :class:`medattn.jobs.base.Job` subclass; its ``PARAMS`` is the schema of the
top-level config section named after the job. Job modules import torch only inside their methods so that
listing plugins and printing the schema stay fast.
"""
from __future__ import annotations

from ..hookspecs import Component, hookimpl
from . import explain, figure, test, train


@hookimpl
def medattn_components() -> list[Component]:
    return [
        Component("job", "train", "medattn.jobs.train:TrainJob",
                  "train with best/last checkpoints and a per-epoch history", train.PARAMS, {"default_order": 0}),
        Component("job", "test", "medattn.jobs.test:TestJob", "evaluate checkpoints on the test split", test.PARAMS,
                  {"default_order": 1}),
        Component("job", "explain", "medattn.jobs.explain:ExplainJob", "save attributions of selected images",
                  explain.PARAMS),
        Component("job", "figure", "medattn.jobs.figure:FigureJob", "draw the run's figures", figure.PARAMS),
    ]

