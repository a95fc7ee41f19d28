"""torch.distributed under ``torchrun``: process group, rank-local device, sharded loaders, gathered outputs.

``torchrun --nproc_per_node N -m medattn.cli run FILE`` (or ``torchrun --nproc_per_node N $(which medattn) run
FILE``) starts N copies; each finds ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` in its environment. Training
is wrapped in DistributedDataParallel; validation and test outputs are gathered from every rank, so the
metrics are those of the whole split; only rank 0 writes files. torch is imported lazily (the runner asks
:func:`is_main` while planning).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


def world_size() -> int:
    """How many processes torchrun started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """True on the process that writes files (rank 0, or the only process)."""
    return rank() == 0


def active() -> bool:
    """True when launched by torchrun with more than one process."""
    return world_size() > 1


@dataclass
class Dist:
    """This process's place in the job: rank, world size and the device it trains on."""

    rank: int
    world: int
    device: Any  # torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: Any) -> Dist:
    """Initialise the process group once (nccl on CUDA, gloo otherwise) and pick ``cuda:LOCAL_RANK``."""
    import torch
    import torch.distributed as td

    if not active():
        return Dist(0, 1, device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not td.is_initialized():
        td.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(td.get_rank(), td.get_world_size(), device)


def wrap(model: Any, dist: Dist) -> Any:
    """DistributedDataParallel around the model when more than one process trains; the model otherwise."""
    if dist.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [dist.device.index] if dist.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def sampler(ds: Any, dist: Dist, shuffle: bool, seed: int) -> Any:
    """A DistributedSampler (every rank a disjoint slice, padded to equal length) or None for one process."""
    if dist.world == 1:
        return None
    from torch.utils.data.distributed import DistributedSampler

    return DistributedSampler(ds, num_replicas=dist.world, rank=dist.rank, shuffle=shuffle, seed=seed,
                              drop_last=False)


def gather_outputs(out: Any, sampler_: Any, dist: Dist) -> Any:
    """Outputs of the whole split from every rank's shard: concatenated in dataset order, the sampler's
    padding duplicates dropped, the loss averaged over the samples."""
    if dist.world == 1:
        return out
    import numpy as np
    import torch.distributed as td

    out.index = np.asarray(list(iter(sampler_)))
    parts: list[Any] = [None] * dist.world
    td.all_gather_object(parts, out)
    index = np.concatenate([p.index for p in parts])
    labels = np.concatenate([p.labels for p in parts])
    scores = np.concatenate([p.scores for p in parts])
    ids = [i for p in parts for i in p.ids]
    groups = [g for p in parts for g in p.groups] if all(p.groups is not None for p in parts) else None
    loss_sum = sum(p.loss * p.images for p in parts)
    images = sum(p.images for p in parts)
    _, first = np.unique(index, return_index=True)  # sorted by dataset index, one copy of each
    logits = np.concatenate([p.logits for p in parts])[first] if all(p.logits is not None for p in parts) else None
    out = type(out)(loss_sum / max(images, 1), labels[first], scores[first],
                    [ids[i] for i in first] if ids else [], [groups[i] for i in first] if groups else None,
                    images, max(p.seconds for p in parts), index[first], logits=logits)
    return out


def gather_train(out: Any, dist: Dist) -> Any:
    """Training-pass outputs of every rank (loss averaged over all images, labels/scores concatenated)."""
    if dist.world == 1:
        return out
    import numpy as np
    import torch.distributed as td

    parts: list[Any] = [None] * dist.world
    td.all_gather_object(parts, out)
    images = sum(p.images for p in parts)
    return type(out)(sum(p.loss * p.images for p in parts) / max(images, 1),
                     np.concatenate([p.labels for p in parts]), np.concatenate([p.scores for p in parts]),
                     images=images, seconds=max(p.seconds for p in parts),
                     terms={k: sum(p.terms.get(k, 0.0) * p.images for p in parts) / max(images, 1)
                            for k in out.terms})


def broadcast_flag(flag: bool, dist: Dist) -> bool:
    """Rank 0's decision (e.g. early stopping) for every rank."""
    if dist.world == 1:
        return flag
    import torch.distributed as td

    box = [flag]
    td.broadcast_object_list(box, src=0)
    return bool(box[0])


def barrier(dist: Dist) -> None:
    """Wait for every rank (no-op for one process)."""
    if dist.world > 1:
        import torch.distributed as td

        td.barrier()


def sync_ranks() -> None:
    """A barrier over every rank when a process group is up (no-op otherwise)."""
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.barrier()
