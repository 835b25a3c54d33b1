"""One training loop for every task, in named steps (`Trainer`).

A task (s2s.tasks) supplies the model, the example lengths for batching, `batch(indices)`,
`validate(model, device) -> {name: score}`, the score that selects best.pt (`metric`) and whether
higher is better; this loop does the rest: optimisation, schedules, the weight average, early
stopping, progress, checkpoints and exact resume.

Under `torchrun --nproc_per_node N -m s2s train ...` the same loop runs in N processes
(DistributedDataParallel): every process computes the same epoch of batches and trains on its
own shard of them (`distributed.shard`), and DDP averages the gradients, so one update sees
N batches of train.max_tokens each. Rank 0 alone validates (and hands the score to the others,
so that schedules and early stopping agree), logs, locks and writes the run directory.

What a crash can cost: last.pt is written at every validation and at least every train.save_every
minutes, through a temporary file; after kill -9, `--resume` goes on from it exactly (metrics.jsonl
is cut back to its step), and a full disk keeps the previous last.pt.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from s2s import checkpoint, distributed, tasks
from s2s import config as config_lib
from s2s.config import Config
from s2s.data.batching import token_batches
from s2s.device import amp_dtype, autocast, resolve_device
from s2s.errors import Interrupted, S2SError

log = logging.getLogger(__name__)
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"  # RUN/tensorboard: event files with metrics.jsonl's values (train.tensorboard)
NEEDS_TENSORBOARD = 'train.tensorboard needs tensorboard: pip install -e ".[tensorboard]"'
clock = time.monotonic  # what train.save_every is measured with (a test turns it by hand)


def build_optimizer(model: torch.nn.Module, lr: float, layer_lr_decay: float = 1.0, num_layers: int = 1) -> torch.optim.Adam:
    """Adam with the fused kernel: one pass over each parameter instead of several (same update up to rounding).
    layer_lr_decay > 1 gives each depth below the head its own group at lr / layer_lr_decay ** depth (ULMFiT's
    discriminative fine-tuning, Howard & Ruder 2018, sec. 3.2), the head's group first."""
    if layer_lr_decay == 1.0:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    from s2s.tasks.pretraining import layer_depth

    groups: dict[int, list] = {}
    for name, param in model.named_parameters():
        groups.setdefault(layer_depth(name, num_layers), []).append(param)
    return torch.optim.Adam([{"params": groups[d], "lr": lr / layer_lr_decay**d} for d in sorted(groups)], lr=lr, fused=True)


def build_scheduler(config: Config, optimizer: torch.optim.Optimizer, higher_is_better: bool):
    t = config.train
    match t.scheduler:
        case "plateau":
            mode = "max" if higher_is_better else "min"
            return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=t.lr_decay, patience=t.patience)
        case "exponential":
            return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=t.lr_decay)
    return None


def weight_average(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of the weights whose decay warms up, min(decay, (1 + n) / (10 + n))
    after n updates (as TensorFlow's ExponentialMovingAverage with num_updates): a fixed decay of 0.9995
    would keep the average mostly the initial random weights for thousands of updates, which on small
    data is the whole run."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(averaged, current, weight)

    return torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=update, use_buffers=True)


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


def absolute_paths(config: Config) -> Config:
    """`config` with data.dir and vocab.word_vectors made absolute (against the current folder), as the
    run directory keeps them: `s2s evaluate --split` then finds the data from any folder."""
    data, vocab = config.data, config.vocab
    if data.format != "hub":
        data = replace(data, dir=os.path.abspath(data.dir))
    if vocab.word_vectors:
        vocab = replace(vocab, word_vectors=os.path.abspath(vocab.word_vectors))
    return replace(config, data=data, vocab=vocab)


def summary(progress: dict) -> dict:
    """`progress` as JSON allows: best is None while the run has not validated (it is -inf or inf then)."""
    out = dict(progress)
    if not (isinstance(out.get("best"), float) and math.isfinite(out["best"])):
        out["best"] = None
    return out


def train(config: Config, run_dir: str | Path, resume: bool = False) -> dict:
    """Train in `run_dir`; returns the final progress (best score or None, steps, time), JSON-safe.
    Started by torchrun with several processes, joins their process group for the run.
    Rank 0 holds the run directory's lock for the whole run: a second writer fails at once."""
    run_dir = Path(run_dir)
    config = absolute_paths(config)
    device = resolve_device(config.train.device)
    if resume and not run_dir.is_dir():
        raise S2SError(f"{run_dir}: no such run directory to resume; start the run without --resume")
    with checkpoint.lock(run_dir) if distributed.is_main() else contextlib.nullcontext():
        if not distributed.launched():
            return summary(Trainer(config, run_dir, resume, device).run())
        with distributed.process_group(device) as device:
            return summary(Trainer(config, run_dir, resume, device).run())


class Trainer:
    """One training run. `run` goes through the steps below; each is a method."""

    def __init__(self, config: Config, run_dir: Path, resume: bool, device: torch.device):
        self.config, self.run_dir, self.device, t = config, run_dir, device, config.train
        self.main, self.rank, self.world = distributed.is_main(), distributed.rank(), distributed.world_size()
        last = self.open_run_dir(resume)
        if t.threads:
            torch.set_num_threads(t.threads)
        _seed(t.seed)  # the same on every process: the same initial weights (DDP also copies rank 0's)
        self.task = self.build_task(resume)
        self.model = self.task.model.to(device)
        if self.rank:  # other dropout masks and word dropout than rank 0's; rank 0 keeps the single-process stream
            _seed(t.seed + self.rank)
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info("model: %s parameters, device %s%s", f"{n_params:,}", device, f", {self.world} processes" if self.world > 1 else "")
        self.optimizer = build_optimizer(self.model, t.lr, config.encoder.layer_lr_decay, config.encoder.num_layers)
        self.use_amp = t.amp if device.type == "cuda" else t.cpu_amp
        dtype = amp_dtype(device, self.use_amp)
        # fp16 (GPUs without bf16) needs loss scaling against underflowing gradients; bf16 does not.
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        if self.use_amp:
            log.info("mixed precision: %s autocast", dtype or "none (this CPU has no native bf16), fp32")
        self.higher = self.task.higher_is_better
        self.scheduler = build_scheduler(config, self.optimizer, self.higher)
        # With train.ema, validation and best.pt use a moving average of the weights: on a noisy dev
        # curve it scores like an ensemble of the recent checkpoints, at one model's cost.
        self.ema = weight_average(self.model, t.ema) if t.ema and self.main else None
        self.scored = self.ema.module if self.ema is not None else self.model  # what validation scores and best.pt holds
        # "batch": updates done in the current epoch. Every process does one batch of its shard per
        # update, so it is also each shard's position; "world_size" says how many shards there were.
        self.progress = {"step": 0, "epoch": 0, "batch": 0, "best": -math.inf if self.higher else math.inf, "best_step": 0,
                         "bad": 0, "seconds": 0.0, "world_size": self.world}
        if last is not None:
            self.restore(last)
        # The forward and backward go through `net`; under torchrun its backward averages the gradients
        # of all processes. Checkpoints hold `model`'s own weights, so they load in a single process.
        self.net = self.model
        if self.world > 1:
            self.net = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.metrics_log = self.open_metrics(resume) if self.main else None
        self.tensorboard = self.open_tensorboard() if self.main and t.tensorboard else None
        self.start = time.time() - self.progress["seconds"]
        self.saved_at = clock()  # when last.pt was last written (train.save_every counts from here)
        # The RNG state from before the update in flight: Ctrl-C inside an update saves this one, so
        # the resumed run redraws the same dropout masks (the weights only change in optimizer.step).
        self.step_rng = None
        self.loss_sum, self.tokens = self.progress.pop("loss_sum", 0.0), self.progress.pop("tokens", 0.0)
        if self.rank:  # the training loss since the last log line that last.pt kept is rank 0's
            self.loss_sum = self.tokens = 0.0
        self.tick = time.time()

    # -- setting up
    def open_run_dir(self, resume: bool) -> dict | None:
        """Check the run directory against --resume, write config.yaml; last.pt's payload when resuming."""
        config, run_dir = self.config, self.run_dir
        last = None
        if resume:
            if not (run_dir / checkpoint.LAST).is_file():
                raise S2SError(f"{run_dir}: nothing to resume (no {checkpoint.LAST}: the run stopped before its first save); "
                               f"start it again without --resume: s2s train CONFIG --out {run_dir}")
            last = checkpoint.load(run_dir / checkpoint.LAST)
            changed = changed_setting(config_lib.read(last["config"], where=str(run_dir / checkpoint.LAST)), config)
            if changed:
                name, before, now = changed
                raise S2SError(f"{run_dir}: --resume with '{name}' changed ({before!r} in the run, {now!r} now); only "
                               "train.* and decode.* keys may change, start another run (--out) for the rest")
        elif (run_dir / checkpoint.LAST).exists():
            raise S2SError(f"{run_dir}: already holds a run; pass --resume to continue it or choose another --out")
        if self.main:
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                # Half-written files of a run killed in a save (ours alone to remove: we hold the lock).
                for name in (checkpoint.BEST, checkpoint.LAST, METRICS):
                    (run_dir / f"{name}.tmp").unlink(missing_ok=True)
                config_lib.save(config, run_dir / checkpoint.CONFIG)
            except OSError as e:
                raise S2SError(f"{run_dir / checkpoint.CONFIG}: cannot write ({e.strerror or e})") from None
        return last

    def open_metrics(self, resume: bool):
        """metrics.jsonl for appending (rank 0). A resumed run first drops the records after last.pt's step
        (written by the run that stopped, and about to be written again); a new run starts it afresh,
        dropping those of a run that never saved (nothing of it can be resumed)."""
        path = self.run_dir / METRICS
        try:
            if resume and path.is_file():
                # Stopped in a validation: it runs again, so a record of it that got out goes too.
                keep = _records_up_to(path.read_text(encoding="utf-8", errors="replace"), self.progress["step"],
                                      drop_dev=bool(self.progress.get("validate_pending")))
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_text(keep, encoding="utf-8")
                os.replace(tmp, path)
            return open(path, "a" if resume else "w", encoding="utf-8")
        except OSError as e:
            raise S2SError(f"{path}: cannot write ({e.strerror or e})") from None

    def open_tensorboard(self):
        """A SummaryWriter on RUN/tensorboard (rank 0). A resumed run purges the events after last.pt's step,
        as open_metrics cuts metrics.jsonl: TensorBoard hides those of the run that stopped."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise S2SError(NEEDS_TENSORBOARD) from None
        step = self.progress["step"]
        return SummaryWriter(str(self.run_dir / TENSORBOARD), purge_step=step + 1 if step else None)

    def build_task(self, resume: bool):
        """The task's data and model. Rank 0 builds the vocabularies into run_dir; the other ranks wait,
        then read them as a resumed run does."""
        if not self.main:
            distributed.barrier()
        try:
            task = tasks.get(self.config.task).Task(self.config, self.run_dir, resume or not self.main)
        except (RuntimeError, MemoryError) as e:  # torch's allocator refusing a model of the config's sizes
            if not isinstance(e, MemoryError) and "alloc" not in str(e):
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise S2SError(f"the model of this config does not fit in memory ({first[:120]}); choose smaller sizes") from None
        if self.main:
            distributed.barrier()
        return task

    def restore(self, last: dict) -> None:
        """Weights, optimizer, schedule, progress and RNG streams from last.pt."""
        self.model.load_state_dict(last["model"])
        self.optimizer.load_state_dict(last["optimizer"])
        if self.scheduler is not None and last.get("scheduler"):
            self.scheduler.load_state_dict(last["scheduler"])
        if self.ema is not None and "ema" in last:
            self.ema.load_state_dict(last["ema"])
        progress = self.progress
        progress.update(last["progress"])
        # Each process continues its own RNG stream; with another number of processes than the saved
        # run (or after Ctrl-C, which saves rank 0's alone) the other ranks start afresh.
        states = last.get("rank_rngs") or [last["rng"]]
        if len(states) == self.world:
            _set_rng_state(states[self.rank])
        else:
            _set_rng_state(last["rng"])
            if self.rank:
                _seed(self.config.train.seed + self.rank)
        saved_world = last["progress"].get("world_size", 1)
        if saved_world != self.world and progress["batch"]:
            # Shards of another size: go on after about as many of the epoch's batches as were used.
            log.warning("resuming a %d-process run with %d processes: restarting near batch %d of the epoch",
                        saved_world, self.world, progress["batch"] * saved_world)
            progress["batch"] = progress["batch"] * saved_world // self.world
        progress["world_size"] = self.world
        log.info("resumed %s at step %d (epoch %d, best %s %.2f)", self.run_dir, progress["step"], progress["epoch"] + 1,
                 self.task.metric, progress["best"])

    # -- the loop
    def run(self) -> dict:
        progress, t = self.progress, self.config.train
        stop = progress.get("stopped", False)
        if progress.get("validate_pending") and not stop:  # interrupted during a validation: do it again
            stop = self.validate()
        try:
            while not stop and progress["epoch"] < t.epochs:
                stop = self.train_epoch()
            if not stop:  # ran out of epochs
                self.save_last()
        except KeyboardInterrupt:
            if self.main:
                self.save_last(interrupted=True)
                self.close_logs()
            raise Interrupted(f"interrupted at step {progress['step']}; resume with: "
                              f"s2s train {self.run_dir / checkpoint.CONFIG} --out {self.run_dir} --resume") from None
        if self.main:
            self.close_logs()
        distributed.barrier()  # no process returns before rank 0 has written last.pt
        progress["seconds"] = round(time.time() - self.start, 1)
        if math.isfinite(progress["best"]):
            log.info("done: best dev %s %.2f at step %d, %.0fs", self.task.metric, progress["best"], progress["best_step"], progress["seconds"])
        else:
            log.info("done at step %d without a validation (no best.pt), %.0fs", progress["step"], progress["seconds"])
        return progress

    def train_epoch(self) -> bool:
        """The rest of the current epoch; True when training should stop."""
        progress, t = self.progress, self.config.train
        batches = distributed.shard(token_batches(self.task.lengths, t.max_tokens, t.seed, progress["epoch"]), self.rank, self.world)
        if progress["batch"] >= len(batches):  # saved by s2s 0.1 at an epoch end: that epoch is done
            progress.update(epoch=progress["epoch"] + 1, batch=0)
            return False
        # A bar only for a person watching: in a log file each redraw would be kept (log lines instead).
        show_bar = self.main and sys.stderr.isatty() and log.isEnabledFor(logging.INFO)
        bar = tqdm(total=len(batches), initial=progress["batch"], desc=f"epoch {progress['epoch'] + 1}", unit="batch",
                   leave=False, dynamic_ncols=True, disable=not show_bar)
        self.net.train()
        if self.config.encoder.unfreeze:  # gradual unfreezing (ULMFiT, sec. 3.3): one more depth every `unfreeze` epochs
            from s2s.tasks.pretraining import depth_mask

            depth_mask(self.model, self.config.encoder.num_layers, progress["epoch"] // self.config.encoder.unfreeze)
        try:
            for i in range(progress["batch"], len(batches)):
                self.update(self.task.batch(batches[i].tolist()).to(self.device))
                progress["batch"] = i + 1
                bar.update(1)
                if progress["step"] % t.log_every == 0 or progress["step"] == t.max_steps:
                    self.log_training(bar, len(batches))
                # Advance the epoch before validating, so the last.pt a validation writes
                # never holds a finished epoch (a resumed run would validate it again).
                end_of_epoch = progress["batch"] == len(batches)
                if end_of_epoch:
                    progress.update(epoch=progress["epoch"] + 1, batch=0)
                    if isinstance(self.scheduler, torch.optim.lr_scheduler.ExponentialLR):
                        self.scheduler.step()
                at_max_steps = bool(t.max_steps) and progress["step"] >= t.max_steps
                if end_of_epoch or at_max_steps or (t.valid_every and progress["step"] % t.valid_every == 0):
                    progress["validate_pending"] = True
                    if self.validate() or at_max_steps:
                        return True
                if end_of_epoch:
                    return False
                self.save_if_due()  # after any validation (which saves) and never at an epoch end (which validates)
        finally:
            bar.close()  # before any error line, so that it starts a line of its own
        return False

    def update(self, batch) -> None:
        """One optimisation step on `batch`."""
        t = self.config.train
        self.step_rng = _rng_state()
        with autocast(self.device, self.use_amp):
            out = self.net(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.progress["step"] += 1
        self.step_rng = None
        self.loss_sum += out.loss.item() * out.num_tokens
        self.tokens += out.num_tokens

    def log_training(self, bar: tqdm, epoch_batches: int) -> None:
        """Training loss, speed and lr since the last call: on the bar or a log line, and in metrics.jsonl."""
        # All processes' tokens: the loss per token and the tokens/s of the whole run.
        loss_sum, tokens = distributed.all_sum(self.loss_sum, self.tokens)
        rate = tokens / max(time.time() - self.tick, 1e-9)
        lr = self.optimizer.param_groups[0]["lr"]
        loss = loss_sum / max(tokens, 1)
        if bar.disable:
            p = self.progress
            log.info("step %d (epoch %d, %d/%d): loss %.3f, %.0f tokens/s, lr %.2e", p["step"], p["epoch"] + 1, p["batch"],
                     epoch_batches, loss, rate, lr)
        else:
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{rate:.0f}", lr=f"{lr:.1e}")
        self.record({"train_loss": loss, "tokens_per_s": round(rate), "lr": lr})
        self.loss_sum = self.tokens = 0.0
        self.tick = time.time()

    def validate(self) -> bool:
        """Score on dev, keep best.pt, adjust the lr, save last.pt; True when training should stop."""
        progress, t = self.progress, self.config.train
        scores = None
        if self.main:
            scores = self.task.validate(self.scored, self.device)
            self.model.train()
        scores = distributed.broadcast(scores)  # every process takes the same lr and stop decisions
        score = scores[self.task.metric]
        improved = score > progress["best"] if self.higher else score < progress["best"]
        if improved:
            progress.update(best=score, best_step=progress["step"], bad=0)
            if self.main:  # (a save that fails, on a full disk, keeps the previous best.pt and stops the run)
                checkpoint.save(checkpoint.best_payload(self.config, self.scored.state_dict()), self.run_dir / checkpoint.BEST)
        else:
            progress["bad"] += 1
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(score)
        lr = self.optimizer.param_groups[0]["lr"]
        elapsed = time.time() - self.start
        self.record({f"dev_{k}": v for k, v in scores.items()} | {"lr": lr, "best": progress["best"]})
        log.info("step %d: dev %s %.2f (best %.2f at step %d), lr %.2e, %.0fs",
                 progress["step"], self.task.metric, score, progress["best"], progress["best_step"], lr, elapsed)
        stop = (t.early_stopping and progress["bad"] >= t.early_stopping) or lr < t.min_lr
        if stop:
            log.info("stopping: %s", "lr below train.min_lr" if lr < t.min_lr else f"no improvement in {progress['bad']} validations")
        progress["stopped"] = bool(stop)
        progress["validate_pending"] = False
        self.save_last()
        return bool(stop)

    # -- the run directory
    def record(self, event: dict) -> None:
        """One line of metrics.jsonl (rank 0), and the same values in TensorBoard (train.tensorboard). Every line
        has "time", when it was written (ISO 8601, UTC), and "seconds" since the run started (a resumed run
        counts on from the seconds last.pt kept, not from when it was resumed)."""
        if self.metrics_log is None:
            return
        now = time.time()
        # "epoch": the 1-based epoch the latest update belongs to (epoch counts finished epochs).
        epoch = self.progress["epoch"] + (1 if self.progress["batch"] else 0)
        stamp = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        event = {"step": self.progress["step"], "epoch": max(epoch, 1), "time": stamp, "seconds": round(now - self.start, 1), **event}
        # JSON has no inf or NaN (json.dumps would write -Infinity): None instead, e.g. best before a dev score.
        event = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in event.items()}
        try:
            self.metrics_log.write(json.dumps(event) + "\n")
            self.metrics_log.flush()
        except OSError as e:
            raise S2SError(f"{self.run_dir / METRICS}: cannot write ({e.strerror or e})") from None
        if self.tensorboard is not None:
            for name, value in event.items():
                if name not in ("step", "epoch", "time") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tensorboard.add_scalar(name, value, event["step"], walltime=now)
            self.tensorboard.flush()

    def close_logs(self) -> None:
        self.metrics_log.close()
        if self.tensorboard is not None:
            self.tensorboard.close()

    def save_if_due(self) -> None:
        """last.pt at least every train.save_every minutes, checked after each update: kill -9 loses no more.
        Rank 0's clock decides for every process (saving gathers their RNG states)."""
        every = self.config.train.save_every
        if every and distributed.agree(clock() - self.saved_at >= every * 60):
            self.save_last()

    def save_last(self, interrupted: bool = False) -> None:
        """Write last.pt from rank 0. Every process calls it at the same point, to hand rank 0 its
        RNG state, except after Ctrl-C: then rank 0 saves alone, with only its own RNG state."""
        self.progress["seconds"] = time.time() - self.start
        rng = (interrupted and self.step_rng) or _rng_state()
        rank_rngs = None if interrupted else distributed.gather(rng)
        if not self.main:
            return
        # The training loss summed since the last log line, so that a resumed run logs the same next line.
        progress = self.progress | {"loss_sum": self.loss_sum, "tokens": self.tokens}
        payload = checkpoint.last_payload(self.config, self.model, self.optimizer, self.scheduler, progress, rng,
                                          rank_rngs if self.world > 1 else None, self.ema)
        checkpoint.save(payload, self.run_dir / checkpoint.LAST)
        self.saved_at = clock()


def changed_setting(saved: Config, config: Config) -> tuple[str, object, object] | None:
    """The first key (with its value in the run and now) that a resumed run may not change: the task, and every
    data, vocab, encoder and head key; train.* and decode.* may change, and so may where the word vectors
    file lives (the run keeps its vocabulary and embeddings). A data.dir the run kept relative (before s2s
    0.2 stored it absolute) is taken from the current folder."""
    if saved.task != config.task:
        return "task", saved.task, config.task
    if saved.data.format != "hub":
        saved = replace(saved, data=replace(saved.data, dir=os.path.abspath(saved.data.dir)))
    saved = replace(saved, vocab=replace(saved.vocab, word_vectors=config.vocab.word_vectors))
    before, now = config_lib.task_dict(saved), config_lib.task_dict(config)
    for section in ("data", "vocab", "encoder", config.task):
        for name, value in before.get(section, {}).items():
            if now.get(section, {}).get(name) != value:
                return f"{section}.{name}", value, now.get(section, {}).get(name)
    return None


def _records_up_to(text: str, step: int, drop_dev: bool = False) -> str:
    """The lines of metrics.jsonl up to `step` (and without the dev scores of `step` when `drop_dev`): records
    of later steps and a torn last line (kill -9 in a write) are dropped, every other line is kept as it is."""
    keep = []
    for line in text.splitlines(keepends=True):
        try:
            event = json.loads(line)
        except ValueError:
            if line.endswith("\n"):
                keep.append(line)
            continue
        at = event.get("step") if isinstance(event, dict) else None
        if isinstance(at, int) and (at > step or (drop_dev and at == step and any(k.startswith("dev_") for k in event))):
            continue
        keep.append(line if line.endswith("\n") else line + "\n")
    return "".join(keep)
