"""Ross's rule for the weight of an rrr l2 term: weight x penalty = the classification loss at the start.

For each variant of an experiment whose train.loss holds an rrr term with penalty l2, this builds the variant's
untrained model (its seed-0 weights) and data, and averages the classification loss and the rrr penalty over the
first training batches; the weight is their ratio. It reads no result of any run: the benchmark fixes its rrr
weights with it before a guided arm is trained. It also prints the seconds per training step of every variant
(with its terms), which is what the benchmark's size was fitted to.

    python experiments/benchmarks/guided_attention_lambda.py experiments/benchmarks/guided_attention.yaml
"""
from __future__ import annotations

import argparse
import time

import torch

from medattn.components.losses import LossTerms, build_losses
from medattn.config import load_experiment
from medattn.runs.plan import plan
from medattn.train import engine as E


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--batches", type=int, default=4, help="training batches averaged (default 4)")
    ap.add_argument("--set", action="append", default=[], help="config override (as medattn run --set)")
    args = ap.parse_args()
    exp = load_experiment(args.file, args.set)
    seen = set()
    for run, _ in plan(exp, writes=False):
        if run.variant in seen:
            continue
        seen.add(run.variant)
        bundle, splits = run.data()
        model = run.new_model().train()
        cfg = run.config["train"]
        loader = E.make_loader(splits["train"], cfg["batch_size"], True, run.config["seed"] * 1000, torch.device("cpu"),
                               E.LoaderSettings(0, **cfg["loader"]))
        terms = build_losses(run.registry, run.config, model, bundle.has_masks, None, bundle.has_confound_masks)
        unweighted = LossTerms([(label, 1.0, term) for label, _, term in terms.terms])
        loss_fn = E.loss_function(model)
        sums: dict[str, float] = {}
        seconds = 0.0
        for i, batch in enumerate(loader):
            if i == args.batches:
                break
            start = time.perf_counter()
            model.zero_grad()
            _, loss, parts = E._terms_loss(model, model, unweighted, batch, batch["image"], batch["label"], loss_fn)
            loss.backward()
            seconds += time.perf_counter() - start
            for label, value in parts.items():
                sums[label] = sums.get(label, 0.0) + float(value)
        n = min(args.batches, len(loader))
        line = f"{run.variant}: {seconds / n:.2f} s/step"
        for label, spec in zip(sums, cfg["loss"]):
            if spec["name"] == "rrr" and spec.get("params", {}).get("penalty", "l2") == "l2":
                line += (f"; {label}: classification {sums['classification'] / n:.4g}, penalty {sums[label] / n:.4g}"
                         f" -> weight {sums['classification'] / sums[label]:.4g}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
