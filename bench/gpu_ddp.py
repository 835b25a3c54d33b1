"""The DistributedDataParallel path of `s2s train` on one device, for bench/gpu.sh.

    python bench/gpu_ddp.py --device cuda|cpu --work DIR [--steps 8]

torchrun with one process sets WORLD_SIZE=1, which `s2s train` runs as a plain single process, and
NCCL refuses two processes on one GPU; so with one GPU the multi-process path cannot run as it
does on several. This runs the closest thing: a process group of one (NCCL on a GPU, gloo on a
CPU), s2s's Trainer with its model wrapped in DistributedDataParallel exactly as under torchrun
(s2s.train.Trainer.__init__), so that the gradient reducer, the NCCL broadcasts, all-reduces and
gathers of s2s.distributed, and rank 0's validation and saves all run on the device. Its training
losses must equal those of a plain run of the same config (one process: the same gradients).
What it cannot show: an all-reduce between two GPUs. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import socket
import sys
import time
from pathlib import Path

import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from s2s import config as config_lib
from s2s import distributed
from s2s.device import resolve_device
from s2s.train import Trainer, train

WORDS = {"der": "the", "hund": "dog", "katze": "cat", "sieht": "sees", "mag": "likes", "ein": "a", "ball": "ball", "haus": "house"}


def write_corpus(folder: Path) -> Path:
    """A made-up word-for-word language pair, {train,val,test}.{de,en}: the same files every time."""
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 40), ("val", 6), ("test", 6)):
        src = [" ".join(rng.choice(list(WORDS)) for _ in range(rng.randint(3, 6))) for _ in range(n)]
        (folder / f"{split}.de").write_text("".join(s + "\n" for s in src), encoding="utf-8")
        (folder / f"{split}.en").write_text("".join(" ".join(WORDS[w] for w in s.split()) + "\n" for s in src), encoding="utf-8")
    return folder


def tiny_config(data: Path, device: str, steps: int) -> config_lib.Config:
    return config_lib.from_dict({
        "task": "translation",
        "data": {"format": "text", "dir": str(data.resolve()), "src_lang": "de", "tgt_lang": "en", "train": "train", "dev": "val", "test": "test"},
        "vocab": {"src_size": 30, "tgt_size": 30},
        "encoder": {"emb_dim": 16, "hidden_size": 16, "dropout": 0.1},
        "translation": {"dec_hidden_size": 32, "attn_size": 16, "beam_size": 2},
        "train": {"epochs": 10, "max_steps": steps, "max_tokens": 80, "lr": 0.01, "threads": 1, "log_every": 1, "device": device, "seed": 7},
    })


def losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return {r["step"]: r["train_loss"] for r in records if "train_loss" in r}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--work", required=True, help="a new folder for the corpus and the two runs")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = resolve_device(args.device)
    work = Path(args.work)
    config = tiny_config(write_corpus(work / "corpus"), args.device, args.steps)

    t0 = time.perf_counter()
    train(config, work / "plain")

    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    with distributed.process_group(device) as rank_device:
        backend = dist.get_backend()
        trainer = Trainer(config, work / "ddp", False, rank_device)
        # What Trainer.__init__ does when torchrun starts several processes (world_size > 1).
        trainer.net = DistributedDataParallel(trainer.model, device_ids=[rank_device.index] if rank_device.type == "cuda" else None)
        trainer.run()
        helpers_ok = (distributed.all_sum(1.0, 2.5) == [1.0, 2.5] and distributed.agree(True) and distributed.broadcast({"a": 1}) == {"a": 1}
                      and distributed.gather(3) == [3])
    plain, ddp = losses(work / "plain"), losses(work / "ddp")
    same_steps = sorted(plain) == sorted(ddp) and len(plain) == args.steps
    diff = max((abs(plain[s] - ddp[s]) / max(abs(plain[s]), 1e-9) for s in plain if s in ddp), default=float("inf"))
    # One process averages nothing: the same gradients, so the same losses, up to the GPU's non-deterministic sums.
    ok = bool(helpers_ok and same_steps and diff <= 1e-3 and (work / "ddp" / "best.pt").is_file())
    print(json.dumps({"ok": ok, "backend": backend, "world_size": 1, "device": str(rank_device), "steps": len(ddp),
                      "max_rel_loss_diff": diff, "helpers_ok": helpers_ok, "seconds": round(time.perf_counter() - t0, 1)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
