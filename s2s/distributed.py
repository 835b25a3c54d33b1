"""Multi-process training under torchrun: one process per GPU (NCCL) or per CPU worker (gloo).

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE for each process it starts.
Outside a process group every helper here answers as for a single process (rank 0 of 1), so the
training loop has one code path.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from s2s.errors import S2SError

if TYPE_CHECKING:
    from s2s.data.store import TokenStore


def launched() -> bool:
    """True in a process that torchrun started together with others."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    # RANK stays set after the group is gone, so the CLI can still tell rank 0 from the others.
    return dist.get_rank() if active() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Join torchrun's process group for the duration; yields this process's device (cuda:LOCAL_RANK on GPUs)."""
    if not dist.is_available():
        raise S2SError("started by torchrun, but this torch build has no torch.distributed; run `s2s train` without torchrun")
    if device.type == "cuda":
        local_rank, local_world = int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if local_world > torch.cuda.device_count():
            raise S2SError(
                f"torchrun started {local_world} processes on this machine but it has {torch.cuda.device_count()} CUDA GPU(s): "
                f"one process per GPU, so use --nproc_per_node {torch.cuda.device_count()} (or train.device=cpu for gloo)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owner = not active()  # a caller that set up its own group keeps it
    if owner:
        # Rank 0 validates alone while the others wait in a broadcast; the default timeout
        # (10 minutes for NCCL) would end a run whose validation takes longer.
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=1))
    if not is_main():
        logging.getLogger("s2s").setLevel(logging.WARNING)  # one copy of the progress log, rank 0's
    try:
        yield device
        if owner:
            dist.barrier()  # no rank tears the group down while another still talks to it (gloo aborts at exit otherwise)
    finally:
        if owner:
            dist.destroy_process_group()


def shard(batches: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """This process's share of an epoch's batches: every world-th one from the rank-th on.

    The list is first cut to a multiple of `world`, so that every process runs the same number
    of updates (each backward waits for all of them); up to world - 1 batches an epoch are left
    out, different ones each epoch since the batch order is reshuffled.
    """
    if len(batches) < world:
        raise S2SError(f"an epoch has {len(batches)} batches, fewer than the {world} processes; "
                       "lower train.max_tokens or start fewer processes")
    return batches[rank : len(batches) // world * world : world]


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's `value` on every process (any picklable object)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(flag: bool) -> bool:
    """Rank 0's `flag` on every process: one small tensor broadcast, cheap enough to call after every update
    (for decisions such as a timed save, which every process must take at the same update)."""
    if not active():
        return flag
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL only broadcasts GPU tensors
    x = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.broadcast(x, src=0)
    return bool(x.item())


def gather(value: Any) -> list[Any] | None:
    """Every process's `value`, in rank order, on rank 0; None on the others."""
    if not active():
        return [value]
    out = [None] * world_size() if is_main() else None
    dist.gather_object(value, out, dst=0)
    return out


def all_sum(*values: float) -> list[float]:
    """The sums of `values` over all processes."""
    if not active():
        return list(values)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL only reduces GPU tensors
    x = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(x)
    return x.tolist()


def open_or_build_store(folder: Path, key: dict, build: Callable[[], TokenStore]) -> TokenStore:
    """The token store in `folder` if it was built with `key`, else build() it: rank 0 (or a single process)
    builds and verifies; the other torchrun ranks open what rank 0 built, checking sizes only."""
    from s2s.data.store import open_store

    store = open_store(folder, key, verify=is_main())
    if store is None:
        if not is_main():
            raise S2SError(f"{folder}: rank {rank()} found no token store of this data (rank 0 builds it)")
        store = build()
    return store
