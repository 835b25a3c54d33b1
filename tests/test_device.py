"""Mixed precision and CPU workers compute what the plain path computes: bf16 autocast (where the CPU
runs it natively) stays within bf16's rounding of fp32 in training and decoding, batches decoded on
several CPU workers come out as decoding them one after another, and the training loop's fast paths
(fused Adam, train.cpu_amp) match the plain ones."""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from s2s.data.batching import pad
from s2s.data.sentencepiece import BOS, EOS
from s2s.device import amp_dtype, autocast, cpu_description, cpu_has_fast_bf16, cpu_model_and_flags, cpu_workers, describe_cpu, parallel_map
from s2s.errors import S2SError
from s2s.search import beam_search, greedy_search
from s2s.tasks.translation import make_batch

needs_bf16 = pytest.mark.skipif(not cpu_has_fast_bf16(), reason="this CPU has no native bf16 (AMX or AVX512-BF16)")


def test_amp_is_plain_fp32_when_disabled_or_unsupported():
    cpu = torch.device("cpu")
    assert amp_dtype(cpu, False) is None
    assert amp_dtype(cpu, True) == (torch.bfloat16 if cpu_has_fast_bf16() else None)
    with autocast(cpu, False):
        assert torch.nn.functional.linear(torch.randn(2, 3), torch.randn(4, 3)).dtype == torch.float32


@needs_bf16
def test_bf16_training_loss_and_gradients_are_close_to_fp32(tiny_seq2seq, id_pairs):
    model = tiny_seq2seq(seed=1)
    batch = make_batch(*id_pairs())
    losses, grads = [], []
    for amp in (False, True):
        model.zero_grad()
        with autocast(torch.device("cpu"), amp):
            loss = model(batch).loss
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert losses[1] == pytest.approx(losses[0], rel=2e-2)
    cosine = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert cosine > 0.99  # bf16 keeps ~3 significant digits: the update direction barely moves


@needs_bf16
@pytest.mark.parametrize("beam_size", [1, 4])
def test_bf16_decoding_mostly_matches_fp32(tiny_seq2seq, beam_size, id_pairs):
    """bf16 rounding may flip a near-tie, so outputs need not all be identical: at most one of the
    four may differ."""
    model = tiny_seq2seq(seed=2).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.8)
    src, _ = id_pairs(5)
    tokens, lengths = pad(src)
    limits = torch.full_like(lengths, 12)
    decode = greedy_search if beam_size == 1 else lambda *a: beam_search(*a, beam_size)
    plain = decode(model, tokens, lengths, limits, BOS, EOS)
    with autocast(torch.device("cpu"), True):
        fast = decode(model, tokens, lengths, limits, BOS, EOS)

    same = sum(a == b for a, b in zip(plain, fast))
    assert same >= len(src) - 1, (plain, fast)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_batches_on_two_workers_decode_as_one_after_another(tiny_seq2seq, id_pairs, beam_size):
    """parallel_map keeps the input order, really runs two batches at once (a barrier that both
    workers must reach, which a sequential loop never passes), and leaves the thread count as it was."""
    model = tiny_seq2seq(seed=3).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.8)
    src, _ = id_pairs(12)
    batches = [src[i : i + 3] for i in range(0, len(src), 3)]
    both_running = threading.Barrier(2, timeout=30)

    def decode(batch, wait=False):
        if wait:
            both_running.wait()
        tokens, lengths = pad(batch)
        limits = torch.full_like(lengths, 12)
        if beam_size == 1:
            return greedy_search(model, tokens, lengths, limits, BOS, EOS)
        return beam_search(model, tokens, lengths, limits, BOS, EOS, beam_size)

    threads = torch.get_num_threads()
    one_by_one = [decode(b) for b in batches]
    assert parallel_map(lambda b: decode(b, wait=b is batches[0] or b is batches[1]), batches, workers=2) == one_by_one
    assert torch.get_num_threads() == threads


def test_worker_count():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert cpu_workers(cpu, 0) == torch.get_num_threads()  # auto: one batch per thread
    assert cpu_workers(cuda, 0) == 1
    assert cpu_workers(cpu, 3) == 3
    with pytest.raises(S2SError, match="workers"):
        cpu_workers(cpu, -1)
    assert parallel_map(str, [1, 2, 3], workers=8) == ["1", "2", "3"]
    assert parallel_map(str, [], workers=2) == []


def test_an_error_in_one_batch_stops_the_others():
    """The error reaches the caller, and batches not yet started are dropped, not all run first."""
    started = []

    def work(i):
        started.append(i)
        if i == 0:
            raise ValueError("bad batch")
        threading.Event().wait(0.01)
        return i

    threads = torch.get_num_threads()
    with pytest.raises(ValueError, match="bad batch"):
        parallel_map(work, list(range(200)), workers=2)
    assert len(started) < 200
    assert torch.get_num_threads() == threads


XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_bf16 amx_bf16 amx_tile amx_int8
"""
EPYC = "model name\t: AMD EPYC 7B13 64-Core Processor\nflags\t\t: fpu sse2 avx avx2 fma\n"
LINE = re.compile(r"CPU: .+ \| runs as [A-Z0-9 ]+( \(emulated on [A-Z0-9]+(; [A-Za-z ]+ not limited)?\))?"
                  r"( \| (oneDNN|MKL): (none|(not limited|limited to \S+ \((ONEDNN_MAX_CPU_ISA|MKL_ENABLE_INSTRUCTIONS)\))(, reports .+)?)){2}"
                  r" \| AMX: (yes|yes, unused|no) \| AVX-512 bf16: (yes|yes, unused|no)")
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def test_cpu_line_names_the_model_the_isa_it_runs_and_what_is_left_unused():
    model, flags = cpu_model_and_flags(XEON)
    assert model == "Intel(R) Xeon(R) Platinum 8480+" and {"avx512f", "amx_tile"} <= flags
    native = describe_cpu(model, flags, "AVX512", {})
    assert native == ("CPU: Intel(R) Xeon(R) Platinum 8480+ | runs as AVX512 | oneDNN: not limited | MKL: not limited"
                      " | AMX: yes | AVX-512 bf16: yes")
    emulated = describe_cpu(model, flags, "AVX2", AVX2_ENV, "Intel AVX2", "AVX2")
    assert "runs as AVX2 (emulated on AVX512) |" in emulated
    assert "oneDNN: limited to AVX2 (ONEDNN_MAX_CPU_ISA), reports Intel AVX2" in emulated
    assert "MKL: limited to AVX2 (MKL_ENABLE_INSTRUCTIONS), reports AVX2" in emulated
    assert "AMX: yes, unused | AVX-512 bf16: yes, unused" in emulated
    # Without MKL's variable its GEMMs stay on AVX-512 (and AMX may still be used): the line says so.
    partial = describe_cpu(model, flags, "AVX2", {"ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert "runs as AVX2 (emulated on AVX512; MKL not limited)" in partial and "AMX: yes |" in partial
    assert "MKL: none" in describe_cpu(model, flags, "AVX2", {}, has_mkl=False)
    epyc = describe_cpu(*cpu_model_and_flags(EPYC), "AVX2", {})  # a real AVX2 CPU is not emulating anything
    assert epyc == ("CPU: AMD EPYC 7B13 64-Core Processor | runs as AVX2 | oneDNN: not limited | MKL: not limited"
                    " | AMX: no | AVX-512 bf16: no")
    for line in (native, emulated, partial, epyc, cpu_description(), describe_cpu("arm", set(), "DEFAULT", {}, has_mkl=False)):
        assert LINE.fullmatch(line), line


def test_cpu_line_under_avx2_emulation():
    """ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 emulate an AVX2-only CPU: torch's
    kernels, oneDNN and MKL (each by its own verbose log) all run AVX2, and the line says so."""
    code = ("from s2s.device import cpu_description, probe_isas\n"
            "isas = probe_isas()\nprint(cpu_description(isas['oneDNN'], isas['MKL']))")
    root = Path(__file__).resolve().parents[1]
    line = subprocess.run([sys.executable, "-c", code], env=os.environ | AVX2_ENV, cwd=root, capture_output=True, text=True,
                          check=True).stdout.strip()
    assert LINE.fullmatch(line), line
    assert "oneDNN: limited to AVX2 (ONEDNN_MAX_CPU_ISA)" in line
    if platform.machine().lower() in ("x86_64", "amd64"):  # the libraries' own word, on x86 builds
        if torch.backends.mkldnn.is_available():
            assert "reports Intel AVX2 |" in line
        if torch.backends.mkl.is_available():
            # MKL's banner names the ISA it dispatched to only on Intel CPUs ("Intel(R) Architecture processors" on
            # AMD), so there the line can say only that the variable limits it.
            assert ("MKL: limited to AVX2 (MKL_ENABLE_INSTRUCTIONS), reports AVX2 |" in line
                    or "GenuineIntel" not in Path("/proc/cpuinfo").read_text()
                    and "MKL: limited to AVX2 (MKL_ENABLE_INSTRUCTIONS) |" in line)
    if "avx512f" in cpu_model_and_flags()[1]:
        assert "runs as AVX2 (emulated on AVX512) |" in line
