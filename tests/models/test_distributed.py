import json
import os
import subprocess
import sys

import torch

from medrobust import distributed


def test_single_process_helpers_are_passthrough():
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main_process()) == (0, 1, True)
    t = torch.arange(5)
    assert distributed.all_gather_tensor(t) is t
    assert distributed.all_gather_object({"a": 1}) == [{"a": 1}]
    assert torch.equal(distributed.all_reduce_sum(t), t)
    assert distributed.init_distributed() is False  # no torchrun environment


def test_torchrun_two_process_gloo_training(phantom_png, tmp_path):
    out = tmp_path / "ddp"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "medrobust",
        "train",
        "classifier",
        "--data",
        str(phantom_png),
        "--modality",
        "chest_xray",
        "--epochs",
        "1",
        "--size",
        "32",
        "--batch-size",
        "8",
        "--out",
        str(out),
        "--no-progress",
        "--device",
        "cpu",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    checkpoints = list(tmp_path.rglob("*.safetensors"))
    assert checkpoints == [out / "model.safetensors"]
    assert proc.stdout.count("run folder:") == 1  # only rank 0 reports
    env_info = json.loads((out / "environment.json").read_text())
    assert env_info["world_size"] == 2
    summary = json.loads((out / "summary.json").read_text())
    # validation metrics are gathered from both ranks: every validation image counted once
    assert summary["world_size"] == 2 and summary["best_val"]["n"] == summary["n_val"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_torchrun_two_process_gloo_adversarial_training(phantom_png, tmp_path):
    """PGD-AT under DDP: each rank crafts on its own batch with the bare model; training finishes."""
    out = tmp_path / "ddp-at"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "medrobust", "train", "classifier", "--data", str(phantom_png), "--modality", "chest_xray",
        "--epochs", "1", "--size", "32", "--batch-size", "8", "--out", str(out), "--no-progress",
        "--device", "cpu", "--adversarial", "trades", "--eps", "8/255", "--adv-steps", "2",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run folder:") == 1 and "under PGD" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["adversarial"]["method"] == "trades"
    # validation under PGD is gathered from both ranks: every validation image counted once
    assert summary["best_val"]["robust"]["n"] == summary["n_val"]
    assert list(tmp_path.rglob("*.safetensors")) == [out / "model.safetensors"]
