"""Seeded grouped (patient) splits, the leak check and the splits.json every dataset writes."""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from medattn.api import DataBundle, DataContext, UserError, atomic_write_text

SPLITS = ("train", "val", "test")
CALIBRATION = "calibration"  # the conformal calibration split a data set may add (test.conformal.split)


def grouped_split(labels: Sequence[int], groups: Sequence[str], fractions: Sequence[float], seed: int,
                  stratify: bool = True) -> list[np.ndarray]:
    """Split indices into len(fractions) parts (fractions sum to 1) with no group in two parts.

    Carves the parts off one after another: each carve is a scikit-learn StratifiedGroupKFold fold
    (stratified by label, groups kept whole) when stratification is possible, else a GroupShuffleSplit.
    Returns the index arrays in the order of ``fractions``; the first part gets what is left.
    """
    from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

    labels_a = np.asarray(labels)
    groups_a = np.asarray(groups, dtype=object).astype(str)
    remaining = np.arange(len(labels_a))
    parts: list[np.ndarray] = [np.array([], dtype=np.int64)] * len(fractions)
    total = float(sum(fractions))
    left = 1.0
    rng_seed = int(seed) & 0xFFFFFFFF
    for k in range(len(fractions) - 1, 0, -1):
        frac = fractions[k] / total
        if frac <= 0 or len(remaining) == 0:
            parts[k] = np.array([], dtype=np.int64)
            continue
        share = frac / left  # fraction of what remains
        left -= frac
        sub_groups = groups_a[remaining]
        n_groups = len(set(sub_groups.tolist()))
        if n_groups < 2:
            parts[k] = np.array([], dtype=np.int64)
            continue
        n_splits = int(round(1.0 / share)) if share > 0 else 2
        n_splits = max(2, min(n_splits, n_groups))
        sub_labels = labels_a[remaining]
        taken: np.ndarray | None = None
        if stratify:
            counts = np.unique(sub_labels, return_counts=True)[1]
            if len(counts) > 1 and counts.min() >= n_splits:
                sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=rng_seed + k)
                _, taken = next(iter(sgkf.split(remaining, sub_labels, sub_groups)))
        if taken is None:
            gss = GroupShuffleSplit(n_splits=1, test_size=share, random_state=rng_seed + k)
            _, taken = next(iter(gss.split(remaining, sub_labels, sub_groups)))
        parts[k] = remaining[np.sort(taken)]
        remaining = np.setdiff1d(remaining, parts[k])
    parts[0] = remaining
    return parts


def check_fractions(val_fraction: float, test_fraction: float, where: str = "dataset.params") -> None:
    """Fractions of a carved split must leave something to train on (the schema bounds each one alone)."""
    if val_fraction + test_fraction >= 1:
        raise UserError(f"{where}.val_fraction + test_fraction must be below 1; got {val_fraction} + "
                        f"{test_fraction}")


def _meta(ds: Any) -> tuple[list[str], list[str], list[int]]:
    ids = list(ds.ids())
    groups = list(ds.groups()) if hasattr(ds, "groups") else ids
    labels = list(ds.labels())
    return ids, groups, labels


def finalize_bundle(splits: dict[str, Any], class_names: list[str], ctx: DataContext, *, has_masks: bool,
                    info: dict[str, Any], dataset: str, source: str = "", has_confound_masks: bool = False
                    ) -> DataBundle:
    """Check the splits (none empty, no patient in two, every class trained on), write splits.json."""
    where = source or f"dataset {dataset}"
    metas = {}
    checked = SPLITS + ((CALIBRATION,) if CALIBRATION in splits else ())  # disjoint by patient, in splits.json
    for name in checked:
        if name not in splits:
            raise UserError(f"{where}: no '{name}' split was produced")
        ids, groups, labels = _meta(splits[name])
        if not ids:
            raise UserError(f"{where}: the '{name}' split came out empty; add data or change the split "
                            f"fractions (dataset.params.val_fraction / test_fraction)")
        metas[name] = (ids, groups, labels)
    seen: dict[str, str] = {}
    leaks: list[str] = []
    for name in checked:
        for g in set(metas[name][1]):
            other = seen.setdefault(g, name)
            if other != name:
                leaks.append(f"{g} ({other}+{name})")
    if leaks:
        leaks.sort()
        more = f" and {len(leaks) - 5} more" if len(leaks) > 5 else ""
        raise UserError(f"{where}: patient/group leak between splits: {', '.join(leaks[:5])}{more}. "
                        "The same patient must not be in two splits; use dataset.params.split: grouped "
                        "to re-split by patient, or fix the split lists")
    train_labels = set(metas["train"][2])
    missing = [class_names[c] for c in range(len(class_names)) if c not in train_labels]
    if missing:
        raise UserError(f"{where}: class(es) {missing} have no samples in the train split "
                        f"(classes: {class_names})")
    counts = {name: len(metas[name][0]) for name in checked}
    per_class = {name: {class_names[c]: int(sum(1 for x in metas[name][2] if x == c))
                        for c in range(len(class_names))} for name in checked}
    info = {**info, "counts": counts, "per_class": per_class}
    if ctx.run_dir is not None:  # None under `medattn validate`, which writes nothing
        doc = {"dataset": dataset, "class_names": class_names, "counts": counts,
               "splits": {name: metas[name][0] for name in checked},
               "groups": {name: metas[name][1] for name in checked}}
        atomic_write_text(ctx.run_dir.splits, json.dumps(doc, indent=1))
    return DataBundle(splits=dict(splits), class_names=list(class_names), has_masks=has_masks, info=info,
                      has_confound_masks=has_confound_masks)
