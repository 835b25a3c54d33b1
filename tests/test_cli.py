"""The `s2s` command: user errors print one `error: ...` line and exit 2, Ctrl-C 130; translate keeps one
output line per input line; evaluate follows the run's task; training logs without a terminal."""
from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from s2s import checkpoint
from s2s.cli import main
from s2s.tasks.translation import Translator


def _one_line_error(capsys, *needles: str) -> str:
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# --- errors -----------------------------------------------------------------------------------


def test_missing_config_file(tmp_path, capsys):
    assert main(["-q", "train", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, "nope.yaml")
    assert not (tmp_path / "run").exists()


def test_unknown_config_key(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("encoder:\n  hiden_size: 8\n", encoding="utf-8")
    assert main(["-q", "train", str(path), "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, str(path), "encoder.hiden_size", "did you mean 'encoder.hidden_size'")


def test_unknown_set_key(tmp_path, capsys, corpus_dir, tiny_config):
    from s2s import config as config_lib

    path = tmp_path / "tiny.yaml"
    config_lib.save(tiny_config(corpus_dir), path)
    assert main(["-q", "train", str(path), "--set", "train.lrr=0.1", "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, "train.lrr", "did you mean 'train.lr'")


def test_invalid_yaml_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("encoder:\n  cell: lstm\n emb_dim: 8\n", encoding="utf-8")
    assert main(["-q", "train", str(path)]) == 2
    _one_line_error(capsys, f"{path}:3")


def test_translate_from_a_run_directory_without_checkpoint(tmp_path, capsys):
    (tmp_path / "in.txt").write_text("der hund\n", encoding="utf-8")
    assert main(["-q", "translate", "--model", str(tmp_path), "--input", str(tmp_path / "in.txt")]) == 2
    _one_line_error(capsys, str(tmp_path), "no checkpoint")


def test_translate_from_a_missing_run_directory(tmp_path, capsys):
    assert main(["-q", "translate", "--model", str(tmp_path / "nope")]) == 2
    _one_line_error(capsys, "no such run directory")


def test_translate_with_a_corrupt_checkpoint(tmp_path, capsys, trained_run):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    data = (run / checkpoint.BEST).read_bytes()
    (run / checkpoint.BEST).write_bytes(data[: len(data) // 2])
    (tmp_path / "in.txt").write_text("der hund\n", encoding="utf-8")
    assert main(["-q", "translate", "--model", str(run), "--input", str(tmp_path / "in.txt")]) == 2
    _one_line_error(capsys, str(run / checkpoint.BEST), "corrupt")


def test_translate_with_a_damaged_pickle_in_the_checkpoint(tmp_path, capsys, trained_run, damage_pickle):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    path = run / checkpoint.BEST
    damage_pickle(path, b"\x80\x02h\x09.")  # BINGET of a memo entry that was never stored
    assert main(["-q", "translate", "--model", str(run)]) == 2
    _one_line_error(capsys, str(path), "corrupt")


def test_evaluate_with_misaligned_src_and_ref(tmp_path, capsys, trained_run):
    src, ref = tmp_path / "test.de", tmp_path / "test.en"
    src.write_text("der hund\ndie katze\n", encoding="utf-8")
    ref.write_text("the dog\n", encoding="utf-8")
    argv = ["-q", "evaluate", "--model", str(trained_run), "--src", str(src), "--ref", str(ref),
            "--hyp-prefix", str(tmp_path / "hyp")]
    assert main(argv) == 2
    _one_line_error(capsys, str(src), str(ref), "2 lines", "has 1")


@pytest.mark.parametrize("argv", [["--src", "x"], ["--ref", "x"], [], ["--src", "x", "--ref", "y", "--split", "dev"]])
def test_evaluate_needs_src_and_ref_or_split(tmp_path, capsys, trained_run, argv):
    assert main(["-q", "evaluate", "--model", str(trained_run), *argv]) == 2
    _one_line_error(capsys, "--src FILE --ref FILE")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where there is no CUDA GPU")
def test_device_cuda_without_a_gpu(tmp_path, capsys, trained_run):
    (tmp_path / "in.txt").write_text("der hund\n", encoding="utf-8")
    argv = ["-q", "translate", "--model", str(trained_run), "--input", str(tmp_path / "in.txt"), "--device", "cuda"]
    assert main(argv) == 2
    _one_line_error(capsys, "cuda", "no CUDA GPU")


def test_non_utf8_input_names_file_and_line(tmp_path, capsys, trained_run):
    path = tmp_path / "in.txt"
    path.write_bytes(b"der hund\n\xff\xfe\n")
    assert main(["-q", "translate", "--model", str(trained_run), "--input", str(path)]) == 2
    _one_line_error(capsys, f"{path}:2", "UTF-8")


@pytest.mark.parametrize("flag", ["--beam-size", "--batch-size"])
def test_beam_and_batch_size_must_be_positive(tmp_path, capsys, trained_run, flag):
    assert main(["-q", "translate", "--model", str(trained_run), flag, "0"]) == 2
    _one_line_error(capsys, flag)


def test_usage_errors_exit_2_through_argparse(capsys):
    with pytest.raises(SystemExit) as e:
        main(["translate"])  # --model is required
    assert e.value.code == 2


# --- happy paths ------------------------------------------------------------------------------


def test_train_through_the_cli_makes_a_run_directory(trained_run):
    for name in ("config.yaml", "best.pt", "last.pt", "spm.src.model", "spm.tgt.model", "metrics.jsonl"):
        assert (trained_run / name).is_file(), name
    assert checkpoint.load(trained_run / checkpoint.LAST)["progress"]["step"] == 12


@pytest.mark.parametrize("beam_size", ["1", "3"])
def test_translate_keeps_one_line_per_input_line(tmp_path, capsys, trained_run, beam_size):
    lines = ["der hund sieht ein haus", "", "die katze mag der hund", "   ", "die frau"]
    src, out, raw = tmp_path / "in.de", tmp_path / "out.en", tmp_path / "out.raw"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    argv = ["-q", "translate", "--model", str(trained_run), "--input", str(src), "--output", str(out),
            "--raw-output", str(raw), "--beam-size", beam_size, "--batch-size", "2"]
    assert main(argv) == 0
    assert capsys.readouterr().err.count("error:") == 0
    hyps = out.read_text(encoding="utf-8").split("\n")
    assert hyps[-1] == "" and len(hyps) - 1 == len(lines)  # one line (ended by \n) per input line
    assert hyps[1] == "" and hyps[3] == ""  # an empty (or blank) line gives an empty line
    assert any(hyps[i] for i in (0, 2, 4))  # (not vacuous: the tiny model does output something)
    assert len(raw.read_text(encoding="utf-8").splitlines()) == len(lines)


@pytest.mark.parametrize("beam_size", ["1", "3"])
def test_translate_with_amp_keeps_one_line_per_input_line(tmp_path, capsys, trained_run, beam_size):
    """--amp decodes in bf16 where the CPU has it (fp32 elsewhere); the output contract is the same."""
    src, out = tmp_path / "in.de", tmp_path / "out.en"
    src.write_text("der hund sieht ein haus\n\ndie katze\n", encoding="utf-8")
    argv = ["-q", "translate", "--model", str(trained_run), "--input", str(src), "--output", str(out), "--amp", "--beam-size", beam_size]
    assert main(argv) == 0
    hyps = out.read_text(encoding="utf-8").split("\n")
    assert len(hyps) == 4 and hyps[1] == "" and hyps[0]
    assert Translator.load(trained_run, device="cpu", amp=True).decode.amp
    assert not Translator.load(trained_run, device="cpu").decode.amp  # off unless asked for


def test_translate_on_several_workers_gives_the_same_lines(tmp_path, trained_run):
    lines = ["der hund sieht ein haus", "", "die katze mag der hund", "die frau", "ein mann", "der hund"]
    src = tmp_path / "in.de"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    outputs = []
    for workers in ("1", "3"):
        out = tmp_path / f"out{workers}.en"
        argv = ["-q", "translate", "--model", str(trained_run), "--input", str(src), "--output", str(out),
                "--beam-size", "3", "--batch-size", "2", "--workers", workers]
        assert main(argv) == 0
        outputs.append(out.read_text(encoding="utf-8"))
    assert outputs[0] == outputs[1] and outputs[0].count("\n") == len(lines)


def test_negative_workers_is_a_one_line_error(tmp_path, capsys, trained_run):
    (tmp_path / "in.txt").write_text("der hund\n", encoding="utf-8")
    assert main(["-q", "translate", "--model", str(trained_run), "--input", str(tmp_path / "in.txt"), "--workers", "-1"]) == 2
    _one_line_error(capsys, "workers")


def test_translate_to_stdout(tmp_path, capsys, trained_run):
    src = tmp_path / "in.de"
    src.write_text("der hund\n\ndie katze\n", encoding="utf-8")
    assert main(["-q", "translate", "--model", str(trained_run), "--input", str(src)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 3 and out.split("\n")[1] == ""


def test_translate_from_stdin(capsys, monkeypatch, trained_run):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"der hund\n\ndie katze\n"), encoding="utf-8"))
    assert main(["-q", "translate", "--model", str(trained_run), "--beam-size", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 3 and out.split("\n")[1] == ""


def test_translate_keeps_line_count_when_a_line_holds_a_unicode_line_separator(tmp_path, trained_run):
    src, out = tmp_path / "in.de", tmp_path / "out.en"
    src.write_text("der hund\u2028die katze\nder mann\n", encoding="utf-8")
    assert main(["-q", "translate", "--model", str(trained_run), "--input", str(src), "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8").count("\n") == src.read_text(encoding="utf-8").count("\n")


def test_translate_truncates_a_very_long_line_with_a_warning(tmp_path, capsys, caplog, monkeypatch, trained_run):
    import s2s.tasks.translation

    widths = []  # source widths the search is given

    def recording(search):
        def wrapper(model, src, *args, **kwargs):
            widths.append(src.size(1))
            return search(model, src, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(s2s.tasks.translation, "beam_search", recording(s2s.tasks.translation.beam_search))
    monkeypatch.setattr(s2s.tasks.translation, "greedy_search", recording(s2s.tasks.translation.greedy_search))
    long_line = " ".join(["der hund sieht ein haus"] * 1000)  # 5,000 words
    assert len(long_line.split()) == 5000
    src, out = tmp_path / "in.de", tmp_path / "out.en"
    src.write_text(f"die katze\n{long_line}\nder mann\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="s2s"):
        assert main(["-q", "translate", "--model", str(trained_run), "--input", str(src), "--output", str(out)]) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("input line 2" in w and "max_src_len" in w for w in warnings), warnings
    assert not any("input line 1" in w or "input line 3" in w for w in warnings)
    limit = Translator.load(trained_run, device="cpu").search.max_src_len
    assert widths and max(widths) == limit  # the long line reached the search cut to max_src_len tokens


def test_evaluate_prints_sacrebleu_signatures_and_writes_hypotheses(tmp_path, capsys, trained_run, corpus_dir):
    prefix = tmp_path / "eval" / "test"
    argv = ["-q", "evaluate", "--model", str(trained_run), "--src", str(corpus_dir / "test.de"),
            "--ref", str(corpus_dir / "test.en"), "--hyp-prefix", str(prefix)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("BLEU|") and "tok:13a" in out and "chrF2|" in out
    n = len((corpus_dir / "test.de").read_text(encoding="utf-8").splitlines())
    assert len((tmp_path / "eval" / "test.hyp").read_text(encoding="utf-8").splitlines()) == n
    assert len((tmp_path / "eval" / "test.raw").read_text(encoding="utf-8").splitlines()) == n
    assert main([*argv, "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert 0.0 <= scores["bleu"] <= 100.0 and "bleu_signature" in scores


def test_evaluate_split_uses_the_run_config(tmp_path, capsys, trained_run):
    assert main(["-q", "evaluate", "--model", str(trained_run), "--split", "test", "--json",
                 "--hyp-prefix", str(tmp_path / "t")]) == 0
    assert "bleu" in json.loads(capsys.readouterr().out)


# --- 0.2: evaluate by the run's task, exit codes, progress output ------------------------------


@pytest.mark.parametrize("flag", [["--conll", "x.txt"], ["--data", "x.jsonl"], ["--scheme", "iob2"]])
def test_evaluate_refuses_another_tasks_options(capsys, trained_run, flag):
    assert main(["-q", "evaluate", "--model", str(trained_run), *flag]) == 2
    _one_line_error(capsys, flag[0], "a translation run", "--src")


def test_ctrl_c_in_training_exits_130_after_saving_last(tmp_path, capsys, monkeypatch, corpus_dir):
    from s2s import config as config_lib
    from s2s import train as train_lib
    from conftest import tiny_config_dict

    config_path = tmp_path / "tiny.yaml"
    config_lib.save(config_lib.from_dict(tiny_config_dict(corpus_dir)), config_path)
    calls = {"n": 0}
    update = train_lib.Trainer.update

    def interrupting(self, batch):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return update(self, batch)

    monkeypatch.setattr(train_lib.Trainer, "update", interrupting)
    assert main(["-q", "train", str(config_path), "--out", str(tmp_path / "run")]) == 130
    _one_line_error(capsys, "interrupted at step 3", "--resume")
    assert checkpoint.load(tmp_path / "run" / checkpoint.LAST)["progress"]["step"] == 3


def test_ctrl_c_elsewhere_exits_130(tmp_path, capsys, monkeypatch, trained_run):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Translator, "translate_ids", interrupted)
    (tmp_path / "in.txt").write_text("der hund\n", encoding="utf-8")
    assert main(["-q", "translate", "--model", str(trained_run), "--input", str(tmp_path / "in.txt")]) == 130
    _one_line_error(capsys, "interrupted")


@pytest.mark.parametrize("quiet", [False, True])
def test_training_log_without_a_terminal_has_no_progress_bar(tmp_path, corpus_dir, quiet):
    """stderr to a file (a log, CI): no bar frames (carriage returns), a plain line every train.log_every
    updates instead; with -q, none of those either."""
    import subprocess
    import sys

    from s2s import config as config_lib
    from conftest import tiny_config_dict

    config_path = tmp_path / "tiny.yaml"
    config_lib.save(config_lib.from_dict(tiny_config_dict(corpus_dir, train={"max_steps": 6, "log_every": 2})), config_path)
    log = tmp_path / "train.log"
    with log.open("w") as stderr:
        result = subprocess.run([sys.executable, "-m", "s2s", *(["-q"] if quiet else []), "train", str(config_path),
                                 "--out", str(tmp_path / "run")], stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=300)
    text = log.read_text()
    assert result.returncode == 0, text
    assert "\r" not in text
    steps = [line for line in text.splitlines() if "s2s.train: step " in line and "loss" in line]
    assert (steps == []) if quiet else ([line.split("step ")[1].split(" ")[0] for line in steps] == ["2", "4", "6"]), text
    assert json.loads(result.stdout)["steps"] == 6


# --- issue 22: ranges of integer options, closed or full streams, evaluate's outputs ---------------------------


@pytest.mark.parametrize("flag, value", [("--dim", "0"), ("--window", "0"), ("--min-count", "0"), ("--epochs", "-1"),
                                         ("--threads", "0"), ("--seed", "-1"), ("--seed", str(2**32))])
def test_vectors_integer_options_out_of_range_are_one_line(tmp_path, capsys, flag, value):
    text = tmp_path / "t.txt"
    text.write_text("der hund sieht ein haus\n", encoding="utf-8")
    out = tmp_path / "v.vec"
    assert main(["-q", "vectors", "--text", str(text), "--out", str(out), flag, value]) == 2
    _one_line_error(capsys, flag, value)
    assert not out.exists()  # refused before anything runs (--dim 0 used to write 0-dimensional vectors)


def test_vectors_min_count_above_every_word_is_one_line(tmp_path, capsys):
    pytest.importorskip("gensim")
    text = tmp_path / "t.txt"
    text.write_text("der hund\nder katze\n", encoding="utf-8")
    assert main(["-q", "vectors", "--text", str(text), "--out", str(tmp_path / "v.vec"), "--min-count", "3"]) == 2
    _one_line_error(capsys, "--min-count=3", "'der', 2 times")


def test_evaluate_empty_src_and_ref_is_one_line(tmp_path, capsys, trained_run):
    src, ref = tmp_path / "empty.de", tmp_path / "empty.en"
    src.write_text("", encoding="utf-8")
    ref.write_text("", encoding="utf-8")
    argv = ["-q", "evaluate", "--model", str(trained_run), "--src", str(src), "--ref", str(ref), "--hyp-prefix", str(tmp_path / "h")]
    assert main(argv) == 2
    _one_line_error(capsys, str(src), "no sentences to score")


def test_translate_with_stdin_closed_is_one_line(capsys, monkeypatch, trained_run):
    import sys

    monkeypatch.setattr(sys, "stdin", None)  # what Python makes of `<&-`
    assert main(["-q", "translate", "--model", str(trained_run)]) == 2
    _one_line_error(capsys, "cannot read stdin", "--input")


def test_evaluate_with_stdout_closed_is_an_error_and_keeps_the_predictions(tmp_path, capsys, monkeypatch, trained_run):
    """print() to a closed stdout writes nothing: evaluate used to exit 0 with the scores lost."""
    import sys

    monkeypatch.setattr(sys, "stdout", None)
    prefix = tmp_path / "h"
    assert main(["-q", "evaluate", "--model", str(trained_run), "--split", "test", "--hyp-prefix", str(prefix)]) == 2
    _one_line_error(capsys, "cannot write to stdout (it is closed)")
    assert (tmp_path / "h.hyp").is_file() and (tmp_path / "h.raw").is_file()


def _s2s_in_bash(redirect: str, *argv: str, stdin=None) -> subprocess.CompletedProcess:
    """`s2s ARGV REDIRECT` run by bash, for redirections Python cannot set up itself (`<&-`, `>&-`)."""
    return subprocess.run(["bash", "-c", f'"$@" {redirect}', "bash", sys.executable, "-m", "s2s", "-q", *argv],
                          input=stdin, stdout=subprocess.PIPE if ">" not in redirect else None, stderr=subprocess.PIPE,
                          text=True, timeout=300)


@pytest.mark.parametrize("redirect, reason", [(">&-", "it is closed"), (">/dev/full", "No space left on device")])
def test_evaluate_to_a_closed_or_full_stdout_exits_2(tmp_path, trained_run, redirect, reason):
    if redirect == ">/dev/full" and not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    prefix = tmp_path / "h"
    result = _s2s_in_bash(redirect, "evaluate", "--model", str(trained_run), "--split", "test", "--hyp-prefix", str(prefix))
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: cannot write to stdout ({reason})\n"  # one line, no traceback at exit
    assert (tmp_path / "h.hyp").is_file()  # the predictions are kept


def test_translate_with_stdin_closed_by_the_shell(trained_run):
    result = _s2s_in_bash("<&-", "translate", "--model", str(trained_run))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "error: cannot read stdin (it is closed); give --input FILE\n"


def test_a_closed_pipe_ends_quietly():
    """`s2s ... | head`: the reader is gone; no error line, no traceback (at exit either)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "s2s", "config", "translation"], stdout=write_end,
                                stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write_end)
    assert result.returncode == 1 and result.stderr == ""


def test_evaluate_prints_the_scores_before_a_failed_write(tmp_path, capsys, trained_run):
    """A read-only run directory (here: eval/ cannot be made, which holds for root too): the scores are
    printed first, then one line says the predictions were not saved."""
    (tmp_path / "blocked").write_text("a file where a folder would go", encoding="utf-8")
    argv = ["-q", "evaluate", "--model", str(trained_run), "--split", "test", "--hyp-prefix", str(tmp_path / "blocked" / "h")]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out.startswith("BLEU|") and "chrF2|" in out
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'blocked' / 'h.hyp'}: cannot write")
    assert "the scores above stand" in lines[0] and "--hyp-prefix" in lines[0]


def test_evaluate_outputs_of_files_of_one_name_in_two_folders_do_not_collide(tmp_path, capsys, trained_run, corpus_dir):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    hyps = []
    for folder, rows in (("a", slice(0, 3)), ("b", slice(3, 6))):
        (tmp_path / folder).mkdir()
        for lang in ("de", "en"):
            lines = (corpus_dir / f"test.{lang}").read_text(encoding="utf-8").splitlines()[rows]
            (tmp_path / folder / f"test.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
        argv = ["-q", "evaluate", "--model", str(run), "--src", str(tmp_path / folder / "test.de"),
                "--ref", str(tmp_path / folder / "test.en"), "--json"]
        assert main(argv) == 0
        hyps.append(Path(json.loads(capsys.readouterr().out)["hypotheses"]))
    assert hyps[0] != hyps[1] and all(h.parent == run / "eval" and h.name.startswith("test.de-") for h in hyps)
    assert [len(h.read_text(encoding="utf-8").splitlines()) for h in hyps] == [3, 3]  # neither overwrote the other
    assert main(["-q", "evaluate", "--model", str(run), "--split", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hypotheses"] == str(run / "eval" / "test.hyp")  # a split keeps its name


def test_translate_refuses_cr_only_line_ends(tmp_path, capsys, trained_run):
    """A file saved with CR-only line ends would read as one line and give one translation for many."""
    (tmp_path / "in.txt").write_bytes(b"der hund\rdie katze\r")
    assert main(["-q", "translate", "--model", str(trained_run), "--input", str(tmp_path / "in.txt")]) == 2
    _one_line_error(capsys, "in.txt:1: a carriage return inside the line")


# --- issue 18: streaming prediction: chunk by chunk, each chunk's output written as soon as it is done ---------


@pytest.fixture
def chunked(monkeypatch):
    """chunked(first, cap): prediction commands read their input in chunks of first, 2 * first, ... cap lines."""
    from s2s.data import stream

    def set_sizes(first: int, cap: int) -> None:
        monkeypatch.setattr(stream, "FIRST_CHUNK", first)
        monkeypatch.setattr(stream, "MAX_CHUNK", cap)
        monkeypatch.setattr(stream, "BATCHES_PER_CHUNK", 0)

    return set_sizes


def _train_tiny(root: Path, config: dict) -> Path:
    """A run trained for a few updates: its predictions are arbitrary, which is all these tests need."""
    from s2s import config as config_lib
    from s2s.train import train

    train(config_lib.from_dict(config), root / "run")
    return root / "run"


TAG_SENTENCES = [["Alan", "Shearer", "visited", "Paris", "."], ["the", "EU", "said", "on", "Monday"], ["Peter", "left", "."],
                 ["Ann", "Lee", "visited", "New", "York", "."], ["Reuters", "said", "."]]


@pytest.fixture(scope="module", params=[0, 12], ids=["alone", "context"])
def tagging_run(request, tmp_path_factory) -> Path:
    """A tiny tagger reading each sentence alone, or (context) runs of sentences of up to 12 tokens as one text."""
    root = tmp_path_factory.mktemp("tagging")
    rows = ["-DOCSTART- -X- -X- O", ""]
    for i in range(12):
        rows += [f"{w} NN O {'I-PER' if w[0].isupper() else 'O'}" for w in TAG_SENTENCES[i % 5]] + [""]
    for split in ("train", "valid", "test"):
        (root / f"{split}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return _train_tiny(root, {
        "task": "tagging", "data": {"format": "conll", "dir": str(root), "train": "train", "dev": "valid", "test": "test"},
        "encoder": {"emb_dim": 8, "hidden_size": 8, "dropout": 0.0},
        "tagging": {"char_emb_dim": 4, "char_filters": 4, "case_dim": 2, "context_tokens": request.param},
        "train": {"epochs": 1, "max_tokens": 60, "threads": 1, "device": "cpu"}})


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("classification")
    rows = [{"text": f"{w} movie {i}", "label": label} for i in range(8) for w, label in (("great", "pos"), ("awful", "neg"))]
    for split in ("train", "dev"):
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return _train_tiny(root, {
        "task": "classification", "data": {"format": "jsonl", "dir": str(root), "train": "train", "dev": "dev"},
        "vocab": {"min_freq": 1}, "encoder": {"emb_dim": 8, "hidden_size": 8, "dropout": 0.0},
        "classification": {"attn_size": 8}, "train": {"epochs": 1, "max_tokens": 60, "threads": 1, "device": "cpu"}})


TRANSLATE_LINES = ["der hund sieht ein haus", "", "die katze mag der hund", "die frau", "   ", "ein mann sieht die katze",
                   "der hund", "die katze sieht ein rote ball", "", "der mann mag ein kleine haus", "die frau sieht der hund"]


@pytest.mark.parametrize("first, cap", [(1, 1), (2, 2), (1, 4)])
def test_translate_in_chunks_gives_what_translating_all_at_once_gives(tmp_path, capsys, chunked, trained_run, first, cap):
    chunked(first, cap)
    src, out, raw = tmp_path / "in.de", tmp_path / "out.en", tmp_path / "out.raw"
    src.write_text("\n".join(TRANSLATE_LINES) + "\n", encoding="utf-8")
    argv = ["-q", "translate", "--model", str(trained_run), "--input", str(src), "--output", str(out), "--raw-output", str(raw),
            "--beam-size", "3", "--batch-size", "2", "--workers", "2"]
    assert main(argv) == 0
    translator = Translator.load(trained_run, device="cpu", workers=2)
    ids = translator.translate_ids(TRANSLATE_LINES, 3, 2)
    assert out.read_text(encoding="utf-8") == "".join(translator.sp_tgt.decode(x) + "\n" for x in ids)
    assert raw.read_text(encoding="utf-8") == "".join(translator.pieces(x) + "\n" for x in ids)


TAG_TEXT = ["Alan Shearer visited Paris .", "the EU said on Monday", "", "Peter left .", "Ann Lee visited New York .",
            "Reuters said .", "Alan Shearer visited Paris .", "", "", "the EU said on Monday", "Peter left ."]
# Documents, sentences without a blank line before a -DOCSTART-, a 1-column (token only) input.
TAG_CONLL = ["-DOCSTART-", "", "Alan", "Shearer", "visited", "Paris", ".", "", "the", "EU", "said", "", "", "Peter", "left",
             "-DOCSTART-", "Ann", "Lee", "visited", "New", "York", ".", "", "-DOCSTART-", "", "Reuters", "said", ".", "",
             "Peter", "left", ".", "", "the", "EU"]


@pytest.mark.parametrize("first, cap", [(1, 1), (2, 2), (3, 8)])
@pytest.mark.parametrize("input_format, fmt", [("text", "json"), ("text", "inline"), ("conll", "json"), ("conll", "conll")])
def test_tag_in_chunks_gives_what_tagging_all_at_once_gives(tmp_path, capsys, chunked, tagging_run, first, cap, input_format, fmt):
    """Chunks end between the runs of sentences the tagger reads as one text, and in CoNLL input at a blank line."""
    from s2s.data.conll import parse_conll
    from s2s.tasks.tagging import Tagger, tagged_conll

    chunked(first, cap)
    lines = TAG_TEXT if input_format == "text" else TAG_CONLL
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["-q", "tag", "--model", str(tagging_run), "--input", str(src), "--input-format", input_format,
                 "--format", fmt, "--batch-size", "2"]) == 0
    tagger = Tagger.load(tagging_run, device="cpu")
    if input_format == "text":
        records = tagger.tag(lines, 2)
    else:
        sentences = parse_conll(lines, where=str(src), tagged=False)
        records = tagger.tag_conll(sentences, 2)
    if fmt == "json":
        expected = [r.to_json() for r in records]
    elif fmt == "inline":
        expected = [r.to_inline() for r in records]
    else:
        expected = tagged_conll(lines, sentences, records) if input_format == "conll" else [x for r in records for x in r.to_conll()]
    assert any(r.entities for r in records)  # (not vacuous: the tiny model does find entities)
    assert capsys.readouterr().out == "".join(line + "\n" for line in expected)


@pytest.mark.parametrize("first, cap", [(1, 1), (2, 4)])
@pytest.mark.parametrize("input_format", ["text", "jsonl"])
def test_classify_in_chunks_gives_what_classifying_all_at_once_gives(capsys, monkeypatch, chunked, classification_run,
                                                                    first, cap, input_format):
    """JSONL on stdin is still recognised by its first non-blank line, here after blank lines longer than a chunk."""
    from s2s.tasks.classification import Classifier

    chunked(first, cap)
    texts = ["", "", "", "great movie", "awful movie 3", "", "great", "awful awful"]
    lines = texts if input_format == "text" else [json.dumps({"text": t, "label": "pos"}) if t else "" for t in texts]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("".join(x + "\n" for x in lines).encode()), encoding="utf-8"))
    assert main(["-q", "classify", "--model", str(classification_run), "--format", "json"]) == 0
    predictions = Classifier.load(classification_run, device="cpu").predict(texts)
    assert capsys.readouterr().out == "".join((p.to_json() if p else "") + "\n" for p in predictions)


def test_the_first_chunk_is_on_disk_before_the_input_ends(tmp_path, trained_run):
    """stdin is read as it comes: lines piped in get their translation written while the input is still open."""
    out = tmp_path / "out.en"
    proc = subprocess.Popen([sys.executable, "-m", "s2s", "-q", "translate", "--model", str(trained_run), "--output", str(out)],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(b"der hund sieht ein haus\ndie katze\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 120
        while not (out.exists() and out.read_text(encoding="utf-8").count("\n") == 2) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        assert out.read_text(encoding="utf-8").count("\n") == 2 and proc.poll() is None  # written, the input still open
        proc.stdin.write(b"der mann\n")
        proc.stdin.close()
        assert proc.wait(timeout=120) == 0 and proc.stderr.read() == b""
    finally:
        proc.kill()
    assert out.read_text(encoding="utf-8").count("\n") == 3


def test_translate_into_head_ends_quietly_without_translating_the_rest(tmp_path, trained_run):
    """`s2s translate ... | head -1`: the pipeline exits 0 with nothing on stderr; s2s itself stops at its next write
    into the closed pipe (exit 1, as `s2s config` does; only `set -o pipefail` shows it) instead of translating on."""
    src = tmp_path / "in.de"
    src.write_text("der hund sieht ein haus\n" * 100_000, encoding="utf-8")
    result = subprocess.run(["bash", "-c", '"$@" < "$0" | head -n 1; echo "${PIPESTATUS[0]}" > "$0.status"', str(src),
                             sys.executable, "-m", "s2s", "translate", "--model", str(trained_run), "--beam-size", "1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.count("\n") == 1
    assert (tmp_path / "in.de.status").read_text() == "1\n"


@pytest.mark.parametrize("bad, reason", [(b"\xff\xfe", "not valid UTF-8"), (b"der\rhund", "a carriage return inside the line")])
def test_a_bad_line_mid_input_keeps_the_output_before_it(tmp_path, capsys, chunked, trained_run, bad, reason):
    chunked(4, 8)
    good = TRANSLATE_LINES * 3  # 33 lines, then the bad one
    src, out = tmp_path / "in.de", tmp_path / "out.en"
    src.write_bytes("".join(x + "\n" for x in good).encode() + bad + b"\nder hund\n")
    assert main(["-q", "translate", "--model", str(trained_run), "--input", str(src), "--output", str(out), "--beam-size", "1"]) == 2
    _one_line_error(capsys, f"{src}:34: {reason}")
    translator = Translator.load(trained_run, device="cpu")
    assert out.read_text(encoding="utf-8") == "".join(x + "\n" for x in translator.translate(good, 1))


def test_conll_errors_in_a_later_chunk_name_their_line(tmp_path, capsys, chunked, tagging_run):
    """Line numbers count from the start of the input, and the column count stays the first token line's."""
    chunked(2, 2)
    src = tmp_path / "in.conll"
    for bad, message in (("Peter NN O", "expected 1 columns like the lines before, got 3"), ("a b c d e", "expected 1 to 4 columns")):
        src.write_text("\n".join(TAG_CONLL[:12] + [bad] + TAG_CONLL[12:]) + "\n", encoding="utf-8")
        assert main(["-q", "tag", "--model", str(tagging_run), "--input", str(src), "--input-format", "conll"]) == 2
        _one_line_error(capsys, f"{src}:13: {message}")


def test_writing_over_the_input_or_another_output_is_refused(tmp_path, capsys, trained_run):
    """Each chunk's output is written as it is done: into the input file, it would destroy what is still to be read."""
    src = tmp_path / "in.de"
    src.write_text("der hund\n", encoding="utf-8")
    assert main(["-q", "translate", "--model", str(trained_run), "--input", str(src), "--output", str(tmp_path / "." / "in.de")]) == 2
    _one_line_error(capsys, "the same file as", "a file of its own")
    assert src.read_text(encoding="utf-8") == "der hund\n"
    argv = ["-q", "translate", "--model", str(trained_run), "--input", str(src), "--output", str(tmp_path / "o"), "--raw-output", str(tmp_path / "o")]
    assert main(argv) == 2
    _one_line_error(capsys, "the same file as")
