"""bench/gpu.sh, the GPU check: its smoke version (`--device cpu --smoke`) runs every stage and prints
the table with each, and the harness reports a stage that fails or outlives its limit."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MULTI30K = ROOT.parent / "shared" / "data" / "multi30k"
STAGES = ["device", "tests on cpu", "Multi30k training", "test2016 (s2s evaluate)", "speed benchmark, fp32",
          "speed benchmark, bf16", "DDP (one process)"]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _rows(report: str) -> dict[str, list[str]]:
    """The table's rows: stage -> [status, seconds, result]."""
    rows = {}
    for line in report.splitlines():
        if line.startswith("| ") and not line.startswith("| stage "):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.skipif(not (MULTI30K / "train.de").is_file(), reason=f"Multi30k not found at {MULTI30K} (the shared data folder)")
def test_smoke_runs_every_stage_and_prints_one_table(tmp_path):
    out = tmp_path / "report.txt"
    done = subprocess.run(["bash", "bench/gpu.sh", "--device", "cpu", "--smoke", "--work", str(tmp_path / "work"), "--out", str(out),
                           "--bench-data", str(tmp_path / "bench-data")], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    report = out.read_text(encoding="utf-8")
    assert done.stdout == report  # printed and written
    rows = _rows(report)
    assert list(rows) == STAGES
    assert {row[0] for row in rows.values()} == {"ok"}, report
    assert "torch " in report and "7 of 7 stages passed" in report
    assert rows["tests on cpu"][2].startswith("10 passed, 0 failed, 0 errors, 0 skipped")
    assert "BLEU" in rows["Multi30k training"][2] and "test BLEU" in rows["test2016 (s2s evaluate)"][2]
    assert rows["speed benchmark, fp32"][2].startswith("float32: train ") and "tgt tok/s" in rows["speed benchmark, bf16"][2]
    assert "losses equal to a plain run's" in rows["DDP (one process)"][2]
    for stage in ("preflight", "tests", "train", "evaluate", "bench_fp32", "bench_bf16", "ddp"):
        assert (tmp_path / "work" / f"{stage}.log").is_file()


def test_a_stage_past_its_limit_is_stopped_with_what_it_started(tmp_path):
    gpu_check = _gpu_check()
    # A shell that starts a child of its own: stopping the stage must stop both (its session).
    stage = gpu_check.Stage("tests", ["bash", "-c", "sleep 30 & echo started; wait"], 5, 1)
    child = gpu_check.Running(stage, tmp_path)
    t0 = time.monotonic()
    (code, seconds), = gpu_check.wait_all([(child, 1.0)])[0]
    assert code is None and 1.0 <= seconds < 10 and time.monotonic() - t0 < 10
    assert "stopped at its time limit" in (tmp_path / "tests.log").read_text()
    states = subprocess.run(["ps", "-o", "stat=", "-s", str(child.proc.pid)], capture_output=True, text=True).stdout.split()
    assert all(state.startswith("Z") for state in states), states  # nothing of its session runs on (zombies wait for init)


def test_failed_tests_fail_the_stage_and_are_named(tmp_path):
    gpu_check = _gpu_check()
    (tmp_path / "tests.xml").write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1">'
        '<testcase classname="tests.nn.test_encoder" name="test_padding_invariance[lstm-bi-1l]"><failure message="x"/></testcase>'
        '<testcase classname="a" name="b"/><testcase classname="c" name="d"><skipped/></testcase></testsuite></testsuites>')
    ok, text, failed = gpu_check.tests_result(tmp_path)
    assert not ok and text == "1 passed, 1 failed, 0 errors, 1 skipped"
    assert failed == ["    tests.nn.test_encoder::test_padding_invariance[lstm-bi-1l]"]
    stage = gpu_check.Stage("tests", ["true"], 5, 1)
    outcome = gpu_check.judge(stage, 1, 2.0, 5.0, tmp_path, None, {})
    assert outcome.failed and outcome.status == "FAILED (exit 1)" and failed[0] in outcome.details
