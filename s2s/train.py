"""One training loop for every task.

A task object supplies the model, the example lengths for batching, `batch(indices)`
and `validate(model, device) -> {metric: value}`; this loop does the rest:
optimisation, schedules, early stopping, logging, checkpoints and exact resume.

Under `torchrun --nproc_per_node N -m s2s train ...` the same loop runs in N processes
(DistributedDataParallel): every process computes the same epoch of batches and trains on its
own shard of them (`distributed.shard`), and DDP averages the gradients, so one update sees
N batches of train.max_tokens each. Rank 0 alone validates (and hands the score to the others,
so that schedules and early stopping agree), logs and writes the run directory.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import s2s
from s2s import checkpoint, distributed
from s2s import config as config_lib
from s2s.config import Config
from s2s.data import token_batches
from s2s.device import amp_dtype, autocast, resolve_device
from s2s.errors import S2SError

log = logging.getLogger(__name__)


def build_task(config: Config, run_dir: Path, resume: bool):
    match config.task:
        case "translation":
            from s2s.translation import TranslationTask

            return TranslationTask(config, run_dir, resume)
        case "tagging":
            from s2s.tagging import TaggingTask

            return TaggingTask(config, run_dir, resume)
        case "classification":
            from s2s.classification import ClassificationTask

            return ClassificationTask(config, run_dir, resume)
    raise S2SError(f"unknown task {config.task!r}")


def build_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel: one pass over each parameter instead of several, about
    10% of a training step on CPU for the translation benchmark (same update up to rounding)."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


def _scheduler(config: Config, optimizer: torch.optim.Optimizer):
    t = config.train
    match t.scheduler:
        case "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=t.lr_decay, patience=t.patience)
        case "exponential":
            return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=t.lr_decay)
    return None


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _resume_rng(last: dict, rank: int, world: int, seed: int) -> None:
    """Each process continues its own RNG stream from last.pt; with another number of processes
    than the saved run (or after Ctrl-C, which saves rank 0's alone) the other ranks start afresh."""
    states = last.get("rank_rngs") or [last["rng"]]
    if len(states) == world:
        _set_rng_state(states[rank])
    else:
        _set_rng_state(last["rng"])
        if rank:
            _seed(seed + rank)


def train(config: Config, run_dir: str | Path, resume: bool = False) -> dict:
    """Train in `run_dir`; returns the final progress (best score, steps, time).
    Started by torchrun with several processes, joins their process group for the run."""
    device = resolve_device(config.train.device)
    if not distributed.launched():
        return _train(config, Path(run_dir), resume, device)
    with distributed.process_group(device) as device:
        return _train(config, Path(run_dir), resume, device)


def _train(config: Config, run_dir: Path, resume: bool, device: torch.device) -> dict:
    t = config.train
    main, rank, world = distributed.is_main(), distributed.rank(), distributed.world_size()
    if not 0 <= t.ema < 1:
        raise S2SError(f"train.ema={t.ema}: the decay of the weight average must be at least 0 and below 1 (0 = off; e.g. 0.999)")
    if resume:
        last = checkpoint.load(run_dir / checkpoint.LAST)
        saved = config_lib.from_dict(last["config"], where=str(run_dir / checkpoint.LAST))
        # The run keeps its vocabulary and embeddings: where the word vectors file now lives does not matter.
        vocab = replace(saved.vocab, word_vectors=config.vocab.word_vectors)
        if saved.model != config.model or vocab != config.vocab or saved.task != config.task:
            raise S2SError(f"{run_dir}: --resume with a different task, model or vocab config than the run was started with")
    elif (run_dir / checkpoint.LAST).exists():
        raise S2SError(f"{run_dir}: already holds a run; pass --resume to continue it or choose another --out")
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        config_lib.save(config, run_dir / "config.yaml")

    if t.threads:
        torch.set_num_threads(t.threads)
    _seed(t.seed)  # the same on every process: the same initial weights (DDP also copies rank 0's)

    # Rank 0 builds the vocabularies into run_dir; the other ranks wait, then read them as a resumed run does.
    if not main:
        distributed.barrier()
    task = build_task(config, run_dir, resume or not main)
    if main:
        distributed.barrier()
    model = task.model.to(device)
    if rank:  # other dropout masks and word dropout than rank 0's; rank 0 keeps the single-process stream
        _seed(t.seed + rank)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model: %s parameters, device %s%s", f"{n_params:,}", device, f", {world} processes" if world > 1 else "")
    optimizer = build_optimizer(model, t.lr)
    use_amp = t.amp if device.type == "cuda" else t.cpu_amp
    dtype = amp_dtype(device, use_amp)
    # fp16 (GPUs without bf16) needs loss scaling against underflowing gradients; bf16 does not.
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    if use_amp:
        log.info("mixed precision: %s autocast", dtype or "none (this CPU has no native bf16), fp32")
    scheduler = _scheduler(config, optimizer)
    # With train.ema, validation and best.pt use a moving average of the weights: on a noisy dev
    # curve it scores like an ensemble of the recent checkpoints, at one model's cost.
    ema = None
    if t.ema and main:
        ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(t.ema), use_buffers=True)
    scored = ema.module if ema is not None else model  # what validation scores and best.pt holds
    # "batch": updates done in the current epoch. Every process does one batch of its shard per
    # update, so it is also each shard's position; "world_size" says how many shards there were.
    progress = {"step": 0, "epoch": 0, "batch": 0, "best": -math.inf, "best_step": 0, "bad": 0, "seconds": 0.0, "world_size": world}
    if resume:
        model.load_state_dict(last["model"])
        optimizer.load_state_dict(last["optimizer"])
        if scheduler is not None and last.get("scheduler"):
            scheduler.load_state_dict(last["scheduler"])
        if ema is not None and "ema" in last:
            ema.load_state_dict(last["ema"])
        progress.update(last["progress"])
        _resume_rng(last, rank, world, t.seed)
        saved_world = last["progress"].get("world_size", 1)
        if saved_world != world and progress["batch"]:
            # Shards of another size: go on after about as many of the epoch's batches as were used.
            log.warning("resuming a %d-process run with %d processes: restarting near batch %d of the epoch",
                        saved_world, world, progress["batch"] * saved_world)
            progress["batch"] = progress["batch"] * saved_world // world
        progress["world_size"] = world
        log.info("resumed %s at step %d (epoch %d, best %s %.2f)", run_dir, progress["step"], progress["epoch"] + 1, task.metric, progress["best"])
    # The forward and backward go through `net`; under torchrun its backward averages the gradients
    # of all processes. Checkpoints hold `model`'s own weights, so they load in a single process.
    net = model
    if world > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    metrics_log = open(run_dir / "metrics.jsonl", "a", encoding="utf-8") if main else None
    start = time.time() - progress["seconds"]
    # The RNG state from before the update in flight: Ctrl-C inside an update saves this one, so
    # the resumed run redraws the same dropout masks (the weights only change in optimizer.step).
    step_rng = None

    def record(event: dict) -> None:
        if metrics_log is None:
            return
        # "epoch": the 1-based epoch the latest update belongs to (epoch counts finished epochs).
        epoch = progress["epoch"] + (1 if progress["batch"] else 0)
        event = {"step": progress["step"], "epoch": max(epoch, 1), **event}
        metrics_log.write(json.dumps(event) + "\n")
        metrics_log.flush()

    def save_last(interrupted: bool = False) -> None:
        """Write last.pt from rank 0. Every process calls it at the same point, to hand rank 0 its
        RNG state, except after Ctrl-C: then rank 0 saves alone, with only its own RNG state."""
        progress["seconds"] = time.time() - start
        rng = (interrupted and step_rng) or _rng_state()
        rank_rngs = None if interrupted else distributed.gather(rng)
        if not main:
            return
        payload = {
            "version": s2s.__version__,
            "task": config.task,
            "config": config_lib.to_dict(config),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else {},
            "progress": dict(progress),
            "rng": rng,
        }
        if world > 1 and rank_rngs:
            payload["rank_rngs"] = rank_rngs
        if ema is not None:
            payload["ema"] = ema.state_dict()
        checkpoint.save(payload, run_dir / checkpoint.LAST)

    def validate() -> bool:
        """Score on dev, checkpoint, adjust the lr; True when training should stop."""
        scores = None
        if main:
            scores = task.validate(scored, device)
            model.train()
        scores = distributed.broadcast(scores)  # every process takes the same lr and stop decisions
        score = scores[task.metric]
        improved = score > progress["best"]
        if improved:
            progress.update(best=score, best_step=progress["step"], bad=0)
            if main:
                payload = {"version": s2s.__version__, "task": config.task, "config": config_lib.to_dict(config), "model": scored.state_dict()}
                checkpoint.save(payload, run_dir / checkpoint.BEST)
        else:
            progress["bad"] += 1
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(score)
        lr = optimizer.param_groups[0]["lr"]
        elapsed = time.time() - start
        record({f"dev_{k}": v for k, v in scores.items()} | {"lr": lr, "best": progress["best"], "seconds": round(elapsed, 1)})
        log.info(
            "step %d: dev %s %.2f (best %.2f at step %d), lr %.2e, %.0fs",
            progress["step"], task.metric, score, progress["best"], progress["best_step"], lr, elapsed,
        )
        stop = (t.early_stopping and progress["bad"] >= t.early_stopping) or lr < t.min_lr
        if stop:
            log.info("stopping: %s", "lr below train.min_lr" if lr < t.min_lr else f"no improvement in {progress['bad']} validations")
        progress["stopped"] = bool(stop)
        progress["validate_pending"] = False
        save_last()
        return bool(stop)

    stop = progress.get("stopped", False)
    if progress.get("validate_pending") and not stop:  # interrupted during a validation: do it again
        stop = validate()
    loss_sum = tokens = 0.0
    tick = time.time()
    bar = None
    try:
        while not stop and progress["epoch"] < t.epochs:
            batches = distributed.shard(token_batches(task.lengths, t.max_tokens, t.seed, progress["epoch"]), rank, world)
            if progress["batch"] >= len(batches):  # saved by s2s 0.1 at an epoch end: that epoch is done
                progress.update(epoch=progress["epoch"] + 1, batch=0)
                continue
            bar = tqdm(total=len(batches), initial=progress["batch"], desc=f"epoch {progress['epoch'] + 1}", unit="batch", leave=False, dynamic_ncols=True, disable=not main)
            net.train()
            for i in range(progress["batch"], len(batches)):
                step_rng = _rng_state()
                batch = task.batch(batches[i]).to(device)
                with autocast(device, use_amp):
                    out = net(batch)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(out.loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip)
                scaler.step(optimizer)
                scaler.update()
                if ema is not None:
                    ema.update_parameters(model)
                progress["step"] += 1
                progress["batch"] = i + 1
                step_rng = None
                loss_sum += out.loss.item() * out.num_tokens
                tokens += out.num_tokens
                bar.update(1)
                if progress["step"] % t.log_every == 0 or progress["step"] == t.max_steps:
                    # All processes' tokens: the loss per token and the tokens/s of the whole run.
                    loss_sum, tokens = distributed.all_sum(loss_sum, tokens)
                    rate = tokens / max(time.time() - tick, 1e-9)
                    lr = optimizer.param_groups[0]["lr"]
                    bar.set_postfix(loss=f"{loss_sum / tokens:.3f}", tok_s=f"{rate:.0f}", lr=f"{lr:.1e}")
                    record({"train_loss": loss_sum / tokens, "tokens_per_s": round(rate), "lr": lr})
                    loss_sum = tokens = 0.0
                    tick = time.time()
                # Advance the epoch before validating, so the last.pt a validation writes
                # never holds a finished epoch (a resumed run would validate it again).
                end_of_epoch = progress["batch"] == len(batches)
                if end_of_epoch:
                    progress["epoch"] += 1
                    progress["batch"] = 0
                    if isinstance(scheduler, torch.optim.lr_scheduler.ExponentialLR):
                        scheduler.step()
                at_max_steps = bool(t.max_steps) and progress["step"] >= t.max_steps
                if (t.valid_every and progress["step"] % t.valid_every == 0) or (end_of_epoch and not t.valid_every) or at_max_steps:
                    progress["validate_pending"] = True
                    stop = validate() or at_max_steps
                if stop or end_of_epoch:
                    break
            bar.close()
        if not stop:  # ran out of epochs
            save_last()
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()  # so that the error line starts a line of its own
        if main:
            save_last(interrupted=True)
            metrics_log.close()
        raise S2SError(f"interrupted at step {progress['step']}; resume with: s2s train {run_dir / 'config.yaml'} --out {run_dir} --resume") from None
    if main:
        metrics_log.close()
    distributed.barrier()  # no process returns before rank 0 has written last.pt
    progress["seconds"] = round(time.time() - start, 1)
    log.info("done: best dev %s %.2f at step %d, %.0fs", task.metric, progress["best"], progress["best_step"], progress["seconds"])
    return progress
