"""Multi-process training: how an epoch's batches are shared out, and two gloo processes started by
torchrun that stay in sync, write one run directory and resume exactly."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import metrics_events, train_losses

import s2s
from s2s import checkpoint, distributed
from s2s import config as config_lib
from s2s.errors import S2SError
from s2s.tasks.translation import Translator
from s2s.train import train

needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="this torch build has no torch.distributed with gloo"
)

# 40 training pairs in 12 batches an epoch (max_tokens 80): 6 updates an epoch with 2 processes.
SETTINGS = {"max_tokens": 80, "epochs": 10}
STEPS = 8  # crosses the first epoch end, which validates


@pytest.mark.parametrize("n, world", [(12, 2), (13, 3), (7, 4), (3, 3), (5, 1)])
def test_shards_share_an_epoch_out_evenly(n, world):
    batches = [[i] for i in range(n)]
    shards = [distributed.shard(batches, rank, world) for rank in range(world)]
    used = [b[0] for s in shards for b in s]
    assert len(used) == len(set(used))  # no batch twice in an epoch
    assert {len(s) for s in shards} == {n // world}  # the same number of updates on every process
    assert n - len(used) < world  # and at most world - 1 batches left out


def test_one_process_keeps_every_batch_in_order():
    batches = [[3, 1], [0], [2, 4]]
    assert distributed.shard(batches, 0, 1) == batches


def test_fewer_batches_than_processes_fails():
    with pytest.raises(S2SError, match="fewer than the 3 processes; lower train.max_tokens"):
        distributed.shard([[0], [1]], 0, 3)


@needs_gloo
def test_more_processes_than_gpus_fails(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(S2SError, match="2 processes .* 1 CUDA GPU.*--nproc_per_node 1"):
        with distributed.process_group(torch.device("cuda")):
            pass
    assert not distributed.active()


def _torchrun(*args: str) -> str:
    """`torchrun --nproc_per_node 2 ARGS` on CPU with gloo, importing this checkout of s2s; returns stdout."""
    path = os.pathsep.join(filter(None, [str(Path(s2s.__file__).parents[1]), os.environ.get("PYTHONPATH")]))
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(command)}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory, corpus_dir, tiny_config):
    """Two 2-process runs of STEPS updates: "a" uninterrupted, "b" stopped after 3 and resumed (by
    tests/ddp_worker.py, which also saves each process's final weights as b.rank{0,1}.pt)."""
    root = tmp_path_factory.mktemp("ddp")
    config_path = root / "tiny.yaml"
    config_lib.save(tiny_config(corpus_dir, train=SETTINGS), config_path)
    train_args = ["-q", "train", str(config_path)]
    stdout = _torchrun("-m", "s2s", *train_args, "--out", str(root / "a"), "--set", f"train.max_steps={STEPS}")
    _torchrun("-m", "s2s", *train_args, "--out", str(root / "b"), "--set", "train.max_steps=3")
    worker = str(Path(__file__).with_name("ddp_worker.py"))
    _torchrun(worker, *train_args, "--out", str(root / "b"), "--resume", "--set", f"train.max_steps={STEPS}")
    return {"root": root, "a": root / "a", "b": root / "b", "a_stdout": stdout}


@needs_gloo
def test_processes_end_with_the_same_weights(ddp_runs):
    root = ddp_runs["root"]
    weights = [torch.load(root / f"b.rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    saved = checkpoint.load(ddp_runs["b"] / checkpoint.LAST)["model"]
    assert weights[0].keys() == weights[1].keys() == saved.keys()
    for key, value in saved.items():
        assert torch.equal(weights[0][key], value) and torch.equal(weights[1][key], value), key


@needs_gloo
def test_rank_0_alone_writes_the_run_directory(ddp_runs):
    a = ddp_runs["a"]
    assert sorted(p.name for p in a.iterdir()) == ["best.pt", "config.yaml", "last.pt", "metrics.jsonl", "spm.src.model", "spm.tgt.model", "store"]
    assert len(ddp_runs["a_stdout"].strip().splitlines()) == 1  # one summary line, not one per process
    events = metrics_events(a)
    assert [e["step"] for e in events if "train_loss" in e] == list(range(1, STEPS + 1))  # each update logged once
    # 12 batches an epoch, 6 to each process: the first epoch ends (and validates) at update 6.
    assert [(e["step"], e["epoch"]) for e in events if "dev_bleu" in e] == [(6, 1), (STEPS, 2)]
    last = checkpoint.load(a / checkpoint.LAST)
    assert last["progress"]["world_size"] == 2 and len(last["rank_rngs"]) == 2
    assert not any(key.startswith("module.") for key in last["model"])  # the model's own weights, not DDP's
    assert len(Translator.load(a).translate(["der hund sieht ein ball"], beam_size=2)) == 1  # best.pt loads in one process


@needs_gloo
def test_resume_under_torchrun_equals_uninterrupted(ddp_runs):
    a, b = ddp_runs["a"], ddp_runs["b"]
    losses_a, losses_b = train_losses(a), train_losses(b)
    assert sorted(losses_b) == list(range(1, STEPS + 1))
    assert losses_b == losses_a  # exactly: each process continued its own RNG stream
    assert len(set(losses_a.values())) == STEPS  # the loss moves, so the comparison means something
    last_a, last_b = checkpoint.load(a / checkpoint.LAST), checkpoint.load(b / checkpoint.LAST)
    for key, value in last_a["model"].items():
        assert torch.equal(value, last_b["model"][key]), key


@needs_gloo
def test_one_process_resumes_a_torchrun_run(ddp_runs, tmp_path, corpus_dir, tiny_config):
    run = tmp_path / "run"
    shutil.copytree(ddp_runs["a"], run)
    progress = train(tiny_config(corpus_dir, train=SETTINGS | {"max_steps": STEPS + 2}), run, resume=True)
    assert progress["step"] == STEPS + 2
    # Stopped 2 updates of 2 processes into epoch 2: one process goes on after its 4th batch.
    last = checkpoint.load(run / checkpoint.LAST)["progress"]
    assert (last["epoch"], last["batch"], last["world_size"]) == (1, 6, 1)


def test_only_rank_0_builds_a_missing_token_store(tmp_path, monkeypatch):
    """Another rank that finds no store (rank 0 builds it before the barrier) fails with one line, never builds."""
    from s2s import distributed
    from s2s.errors import S2SError

    built = []
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    with pytest.raises(S2SError, match=r"store: rank 1 found no token store of this data \(rank 0 builds it\)"):
        distributed.open_or_build_store(tmp_path / "store", {"data": 1}, lambda: built.append(1))
    assert built == []
    monkeypatch.setattr(distributed, "is_main", lambda: True)
    assert distributed.open_or_build_store(tmp_path / "store", {"data": 1}, lambda: "built") == "built"
