"""Where each variant's saliency sits on the same flipped images (the marker moved to the class-0 images).

After `medattn run experiments/benchmarks/guided_attention.yaml`, this loads every run's best_val_loss model,
draws the saliency (absolute input gradients, channels summed) of the first flipped images for seed 0, one
column per variant, and scores every run's saliency on all flipped images: the share inside the lesion mask
(energy_in_mask) and inside the marker's box (energy_in_confound), mean over the images, then over the seeds.

    python experiments/benchmarks/guided_attention_figure.py experiments/benchmarks/guided_attention.yaml \
        --output-dir runs --png docs/img/guided_flipped_saliency.png
"""
from __future__ import annotations

import argparse

import numpy as np

from medattn.config import load_experiment
from medattn.evidence.explanation_quality import confound_per_image, localisation_per_image, pixel_map
from medattn.hookspecs import ExplainContext
from medattn.runs.plan import plan


def saliency(run, model, inputs):
    """The benchmark's explain method on ``inputs``: saliency with abs, as (N, H, W) pixel maps."""
    explainer = run.registry.build("explainer", {"name": "saliency", "params": {"abs": True}},
                                   ExplainContext(model=model, num_outputs=model.num_outputs, batch_size=50))
    maps = [explainer(model, inputs[i:i + 50].clone(), None).detach().numpy() for i in range(0, len(inputs), 50)]
    return pixel_map(np.concatenate(maps), "abs")


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--output-dir", default=None)
    ap.add_argument("--png", default="guided_flipped_saliency.png")
    ap.add_argument("--images", type=int, default=4, help="flipped images drawn (default 4)")
    args = ap.parse_args()
    exp = load_experiment(args.file)
    rows, drawn = [], {}
    for run, _ in plan(exp, output_dir=args.output_dir, writes=False):
        _, splits = run.data()
        flipped = splits["flipped"]
        items = [flipped[i] for i in range(len(flipped))]
        inputs = torch.stack([it["image"] for it in items])
        model = run.load_model("best_val_loss").eval()
        rel = saliency(run, model, inputs)
        masks = torch.stack([it["mask"] for it in items]).numpy()
        boxes = torch.stack([it["confound_mask"] for it in items]).numpy()
        rows.append({"variant": run.variant, "seed": run.seed,
                     "energy_in_mask": float(np.nanmean(localisation_per_image(rel, masks)["energy_in_mask"])),
                     "energy_in_confound": float(np.nanmean(confound_per_image(rel, boxes)["energy_in_confound"]))})
        if run.seed == 0:
            drawn[run.variant] = rel[:args.images]
            drawn["_images"] = torch.stack([it["raw"][0] for it in items[:args.images]]).numpy()
            drawn["_masks"], drawn["_labels"] = masks[:args.images, 0], [it["label"] for it in items[:args.images]]
    print("| variant | energy_in_mask (flipped) | energy_in_confound (flipped) |\n|---|---|---|")
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        print(f"| {variant} | {np.mean([r['energy_in_mask'] for r in mine]):.3f} | "
              f"{np.mean([r['energy_in_confound'] for r in mine]):.3f} |")
    draw(drawn, args.png)


def draw(drawn: dict, path: str) -> None:
    import matplotlib.pyplot as plt

    variants = [k for k in drawn if not k.startswith("_")]
    n = len(drawn["_images"])
    fig, axes = plt.subplots(n, len(variants) + 1, figsize=(1.6 * (len(variants) + 1), 1.6 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(drawn["_images"][i], cmap="gray", vmin=0, vmax=1)
        axes[i, 0].contour(drawn["_masks"][i], levels=[0.5], colors="lime", linewidths=0.6)
        axes[i, 0].set_ylabel(f"class {drawn['_labels'][i]}", fontsize=7)
        for j, variant in enumerate(variants, start=1):
            m = drawn[variant][i]
            axes[i, j].imshow(m / (m.max() + 1e-12), cmap="magma", vmin=0, vmax=1)
            axes[i, j].contour(drawn["_masks"][i], levels=[0.5], colors="lime", linewidths=0.6)
    for j, title in enumerate(["flipped image", *variants]):
        axes[0, j].set_title(title, fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
