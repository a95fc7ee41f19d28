"""The explain job's run, step by step (imported when the job runs: it needs torch)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import NotApplicable
from ...hookspecs import ExplainContext
from ...store.rundir import RunDir
from . import files
from .methods import attribute, build_explainers, check_layers, model_to_attribute
from .quality import Scorer
from .select import select, targets_for


def explain(run: Any, rd: RunDir) -> None:
    """Select the images, save them, then attribute and score them with every method."""
    cfg = run.config["explain"]  # at least one method: the job's needs() refuses none at planning
    _, splits = run.data()
    model = run.load_model(cfg["checkpoint"]).to(run.device).eval()
    files.clear(rd)
    chosen = select(run, rd, cfg, model, splits[cfg["split"]])
    if chosen is None:  # e.g. no image every variant gets right: say so, and let the figure job go on
        run.log(f"   explain: no {cfg['split']} image qualifies for select: {cfg['select']}; nothing explained")
        return
    inputs = chosen.pop("inputs")
    attention = chosen.pop("attention", None)
    target = targets_for(cfg, model, chosen)
    chosen["targets"] = np.full(len(inputs), -1) if target is None else target
    files.write_samples(rd, chosen, attention)
    attribute_all(run, rd, model, chosen, inputs, target)


def attribute_all(run: Any, rd: RunDir, model: Any, chosen: dict, inputs: Any, target: np.ndarray | None) -> None:
    """Every method's maps, saved, then scored."""
    cfg = run.config["explain"]
    bs = int(cfg["batch_size"])
    explainers = build_explainers(run.registry, cfg, ExplainContext(model=model, num_outputs=model.num_outputs,
                                                                    batch_size=bs))
    check_layers(explainers, model)
    attributed = model_to_attribute(explainers, model, inputs[:1].to(run.device), run.log)
    scorer = Scorer(cfg["quality"], attributed, inputs, target, chosen.get("masks"), run.device, bs,
                    int(run.config["seed"]), chosen.get("confound_masks"))
    for label, spec, explainer in explainers:
        try:
            attributions = attribute(explainer, attributed, inputs, target, bs, run.device)
        except NotApplicable as exc:
            run.log(f"   explain {label}: skipped ({exc})")
            continue
        path = files.write_attributions(rd, label, spec, attributions)
        run.log(f"   explain {label}: {attributions.shape[0]} image(s) -> {path.relative_to(rd.root)}")
        if scorer.active:
            scores = scorer.score(label, explainer, attributions)
            run.log(f"   quality {label}: " + " ".join(f"{k}={v:.4g}" for k, v in scores.items()))
    files.write_quality(rd, scorer.scores, scorer.curves)
    files.write_quality_images(rd, [str(i) for i in chosen["ids"]], scorer.per_image)
