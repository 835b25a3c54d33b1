"""Faults from outside, on a real `python -m s2s train` process: a signal, kill -9 at a random point
then --resume, and a second writer on the same run directory. Every wait is for an event (a
checkpoint written, the process ending); the timeouts are only a safety net for a hung process."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import metrics_events

import s2s
from s2s import checkpoint
from s2s import config as config_lib
from s2s.cli import main
from s2s.train import train

ROOT = Path(s2s.__file__).parents[1]
SAFETY_NET = 600  # seconds; a healthy run gets there in a few, even on a busy machine
# 12 batches an epoch (the tiny corpus), a save after every update, and (nearly) endless epochs:
# the process is still training whenever the test acts on it, however fast the machine.
ENDLESS = {"max_tokens": 80, "epochs": 100_000, "save_every": 1e-9, "scheduler": "none"}


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "s2s", "-q", *args]


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def _write_config(path: Path, config) -> Path:
    config_lib.save(config, path)
    return path


def _saved_step(run: Path) -> int | None:
    """The step of run/last.pt, None while there is none. The file is replaced by a rename, so a
    reader sees the old file or the new one, never half of one."""
    try:
        return checkpoint.load(run / checkpoint.LAST)["progress"]["step"]
    except Exception:  # not there yet
        return None


def _wait_for_save(proc: subprocess.Popen, run: Path, after: int = 0) -> int:
    """Wait until run/last.pt holds a step above `after`; returns that step."""
    deadline = time.monotonic() + SAFETY_NET
    while (step := _saved_step(run)) is None or step <= after:
        if proc.poll() is not None:
            pytest.fail(f"training ended (exit {proc.returncode}) before saving: {proc.stderr.read()}")
        assert time.monotonic() < deadline, "no checkpoint within the safety net"
        time.sleep(0.01)
    return step


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_training_like_ctrl_c(corpus_dir, tiny_config, tmp_path, sig):
    """`kill` (TERM), or INT to a background job (started with INT ignored, as `cmd &` does), stops
    `s2s train` as Ctrl-C does: one error line saying how to resume, exit 130, last.pt saved where it stopped."""
    config = _write_config(tmp_path / "tiny.yaml", tiny_config(corpus_dir, train=ENDLESS))
    out = tmp_path / "run"
    proc = subprocess.Popen(_command("train", str(config), "--out", str(out)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=_env(), cwd=ROOT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        first = _wait_for_save(proc, out)  # training is under way
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=SAFETY_NET)
    finally:
        proc.kill()  # a run the signal did not stop would otherwise train on after the test
    assert proc.returncode == 130, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(errors) == 1, err
    assert errors[0].startswith("error: interrupted at step") and "--resume" in errors[0], err
    # last.pt holds the step it stopped at, at or after the save the test saw.
    stopped = int(errors[0].split("interrupted at step ")[1].split(";")[0])
    assert checkpoint.load(out / checkpoint.LAST)["progress"]["step"] == stopped >= first, err
    assert not (out / checkpoint.LOCK).exists()  # a clean end lets go of the run directory


def test_kill_9_at_a_random_point_then_resume_ends_where_an_uninterrupted_run_ends(corpus_dir, tiny_config, tmp_path, capsys):
    """kill -9 loses at most train.save_every of work (here: the update in flight), a second writer is
    refused while the first runs, and --resume goes on bitwise as if never stopped."""
    seed = random.randrange(10**6)
    extra_saves = random.Random(seed).randrange(4)  # how many saves after the first to let go by
    config = _write_config(tmp_path / "tiny.yaml", tiny_config(corpus_dir, train=ENDLESS))
    run = tmp_path / "run"
    proc = subprocess.Popen(_command("train", str(config), "--out", str(run)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=_env(), cwd=ROOT)
    try:
        step = _wait_for_save(proc, run)
        # A second writer fails at once with one line naming the first one; the run directory is untouched.
        before = (run / checkpoint.CONFIG).read_bytes()
        for extra in ([], ["--resume"]):
            assert main(["-q", "train", str(config), "--out", str(run), *extra]) == 2
            err = capsys.readouterr().err
            assert err == f"error: {run}: in use by another `s2s train` (process {proc.pid}); wait for it to end or choose another --out\n"
        assert (run / checkpoint.CONFIG).read_bytes() == before
        for _ in range(extra_saves):
            step = _wait_for_save(proc, run, after=step)
        proc.send_signal(signal.SIGKILL)  # lands anywhere: in an update, a save, a log line
        proc.communicate(timeout=SAFETY_NET)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed_at = checkpoint.load(run / checkpoint.LAST)["progress"]["step"]  # intact, whatever the kill interrupted
    assert killed_at >= step, seed
    steps = killed_at + 3  # the resumed run goes on for a few updates (train.* may change on --resume)

    result = subprocess.run(_command("train", str(config), "--out", str(run), "--resume", "--set", f"train.max_steps={steps}"),
                            capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=SAFETY_NET)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["steps"] == steps

    a = tmp_path / "uninterrupted"
    train(tiny_config(corpus_dir, train=ENDLESS | {"max_steps": steps}), a)
    last_a, last = checkpoint.load(a / checkpoint.LAST), checkpoint.load(run / checkpoint.LAST)
    assert last["progress"]["step"] == last_a["progress"]["step"] == steps
    for key, value in last_a["model"].items():
        assert torch.equal(value, last["model"][key]), (key, seed, killed_at)
    for key, value in last_a["optimizer"]["state"].items():
        assert all(torch.equal(v, last["optimizer"]["state"][key][k]) for k, v in value.items()), (key, seed, killed_at)
    # metrics.jsonl was cut back to the step resumed from: each step once, the same losses and dev scores.
    record = lambda e: (e["step"], e.get("train_loss"), e.get("dev_bleu"))  # noqa: E731
    assert [record(e) for e in metrics_events(run)] == [record(e) for e in metrics_events(a)], seed
    assert not list(run.glob("*.tmp")) and not (run / checkpoint.LOCK).exists()
