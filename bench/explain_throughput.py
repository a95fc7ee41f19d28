"""Images/s of the explain job against a restatement of the original code's saliency loop, side by side in one run.

Saliency (captum, abs=False, target None) on densenet121 at 224 px on CPU, single-output head as the original's.
- explain: medattn's explain job (ExplainJob): model built and loaded once, images selected with batched
  predictions, attributed in batches of explain.batch_size, saved to .npz; quality scores off (a separate cost).
- original: what the original code's saliency script does per test image: build the model, load the weights,
  batch 1, Saliency.attribute, save the .npy (it rebuilt all four variants per image; one is restated here,
  which favours the original).
Both share the data set (already built) and the same images. Last line:
``explain_img_s=... original_img_s=... explain_vs_original=...x``.
"""
from __future__ import annotations

import argparse
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import torch

EXPERIMENT = """\
name: bench_explain
seed: 42
device: cpu
dataset:
  name: synthetic_lesions
  image_size: 224
  params: {{n_train: 4, n_val: 4, n_test: {n}}}
model:
  backbone: {{name: densenet121, params: {{pretrained: false}}}}
  attention: {{name: none}}
  head: {{name: flatten_linear}}
explain:
  methods: [{{name: saliency, params: {{abs: false}}}}]
  samples: {n}
  batch_size: {batch}
  quality: {{scores: []}}
jobs: [explain]
output_dir: {out}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    from captum.attr import Saliency

    from medattn.config import load_experiment
    from medattn.jobs.explain import ExplainJob
    from medattn.runs.plan import plan
    from medattn.store import checkpoints
    from medattn.store.manifest import write_run_files

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "bench.yaml"
        file.write_text(textwrap.dedent(EXPERIMENT.format(n=args.images, batch=args.batch, out=Path(tmp) / "runs")))
        exp = load_experiment(file)
        run, _ = plan(exp)[0]
        run.log = lambda msg: None
        write_run_files(run)
        _, splits = run.data()  # shared by both sides, built before timing
        weights = run.dir.checkpoint("best_val_loss")
        model = run.new_model()
        meta = checkpoints.model_meta(run.config, list(model.class_names), model.backbone, exp.registry, None)
        meta["threshold"] = {"value": 0.5, "rule": "fixed", "source": "fixed"}
        checkpoints.save({"format": checkpoints.FORMAT, "model": model.state_dict(), "epoch": 1,
                          "monitor": "val_loss", "value": 1.0, "meta": meta}, weights)

        import medattn_plugins.explainers.captum_methods  # noqa: F401 - as the original side has captum imported

        import medattn.jobs.explain.steps  # noqa: F401 - one-time imports (scipy, sklearn, captum) before timing,

        t0 = time.perf_counter()
        ExplainJob(exp.registry).run(run)
        explain_s = time.perf_counter() - t0
        with np.load(run.dir.attributions("saliency")) as z:
            ours = z["attributions"]

        out = Path(tmp) / "original"
        out.mkdir()
        ds = splits["test"]
        t0 = time.perf_counter()
        last = None
        for i in range(args.images):
            model = run.new_model()  # the original code rebuilds the model for every image ...
            model.load_state_dict(checkpoints.load(weights)["model"])  # ... and reloads its weights
            model.eval()
            x = ds[i]["image"][None].requires_grad_(True)
            model.zero_grad()
            grads = Saliency(model).attribute(x, target=None, abs=False)
            last = grads[0].detach().numpy()
            np.save(out / f"img_{i}_dl_baseline_label_{int(ds[i]['label'])}.npy", np.transpose(last, (1, 2, 0)))
        original_s = time.perf_counter() - t0
    same = np.allclose(ours[-1], last, rtol=1e-3, atol=1e-6 * float(np.abs(last).max()))
    e, s = args.images / explain_s, args.images / original_s
    print(f"images={args.images} batch={args.batch} threads={torch.get_num_threads()} same_maps={same} "
          f"explain_s={explain_s:.1f} original_s={original_s:.1f}")
    print(f"explain_img_s={e:.2f} original_img_s={s:.2f} explain_vs_original={e / s:.2f}x")


if __name__ == "__main__":
    main()
