"""DDP on CPU: two gloo processes train and test one run; metrics cover the whole splits; only rank 0 writes."""
from __future__ import annotations

import json
import os
import shutil
import socket

import torch.multiprocessing as tmp_mp

from tests.test_engine import FAST


def _worker(rank: int, world: int, port: int, file: str, out: str) -> None:
    os.environ.update({"WORLD_SIZE": str(world), "RANK": str(rank), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    import torch.distributed as td

    from medattn.config import load_experiment
    from medattn.runs.runner import run_experiment
    from medattn.store import checkpoints

    saves = []
    real = checkpoints.save
    checkpoints.save = lambda state, path: (saves.append(str(path)), real(state, path))[1]
    try:
        run_experiment(load_experiment(file), log=lambda *_: None)
    finally:
        with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
            json.dump({"saves": saves, "world": td.get_world_size() if td.is_initialized() else 1}, fh)
        if td.is_initialized():
            td.destroy_process_group()


def test_ddp_two_gloo_processes(write, tmp_path):
    text = FAST.format(epochs=1, out=tmp_path / "runs").replace("jobs: [train]", "jobs: [train, test]")
    file = write("ddp.yaml", text)
    for attempt in (1, 2):  # the free port picked here can be taken before the workers bind it: try once more
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            tmp_mp.spawn(_worker, args=(2, port, str(file), str(tmp_path)), nprocs=2, join=True)
            break
        except (tmp_mp.ProcessRaisedException, tmp_mp.ProcessExitedException):
            if attempt == 2:
                raise
            shutil.rmtree(tmp_path / "runs", ignore_errors=True)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["world"] == r1["world"] == 2
    assert r0["saves"] and r1["saves"] == []  # only rank 0 writes checkpoints
    run = tmp_path / "runs" / "fast" / "default"
    metrics = json.loads((run / "metrics" / "test_best_val_loss.json").read_text())
    assert metrics["n"] == 8  # both ranks' shards gathered, no padding duplicates
    with open(run / "metrics" / "predictions_best_val_loss.csv") as fh:
        ids = [line.split(",")[0] for line in fh.read().splitlines()[1:]]
    assert sorted(ids) == [f"test-{i:05d}" for i in range(8)]
    assert (run / "jobs_done.json").is_file()
