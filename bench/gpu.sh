#!/usr/bin/env bash
# The GPU check (issue 18): on one NVIDIA GPU, in one go and within 8 minutes,
#   1. the tests that take a device (tests/nn, tests/test_search.py; S2S_TEST_DEVICE=cuda), with the
#      bf16 and two-process gloo tests (tests/test_device.py, tests/test_distributed.py);
#   2. Multi30k trained on the GPU to its best dev BLEU (configs/multi30k.yaml with train.max_tokens=4000,
#      bf16 autocast, early stopping), then `s2s evaluate --split test` (beam 5);
#   3. the speed benchmark (bench/seq2seq.py) on the GPU in fp32 and in bf16, batches of 1,024 sentences
#      for training and 500 for decoding;
#   4. the DDP path in a one-process NCCL group (bench/gpu_ddp.py; one GPU cannot run two NCCL ranks);
# then prints one table (GPU, torch, each stage's status, counts, tokens/s, times, BLEU), also written
# to WORK/gpu-report.txt (or --out FILE). Exit status 1 when any stage failed or had no time left to run.
#
# Run from the repository root, after `pip install -e .` (no network needed):
#   bash bench/gpu.sh                          # the real check on the GPU
#   bash bench/gpu.sh --device cpu --smoke     # tiny versions of every stage on a CPU (what CI runs, < 1 min)
# Options: --work DIR (a new folder for logs and runs; default runs/gpu-check-DATE-TIME), --out FILE,
#   --data DIR (Multi30k: train/val/test2016.{de,en}; default ../shared/data/multi30k), --bench-data DIR
#   (default bench-data, made from ../shared/bench/make_synthetic.py if missing), --budget SECONDS (460),
#   --set KEY=VALUE (more overrides for the training run). Each stage's log is WORK/<stage>.log.
#
# Time on an H100/H200, estimated (no GPU has run it yet), from docs/speed.md: on 2 CPU threads a
# Multi30k epoch (~430k target tokens) takes ~200 s; on a GPU this recurrent model is bound by kernel
# launches (~60 small kernels per decoder step forward and backward), ~20-40 ms per update of ~4,000
# tokens, so ~3-5 s per epoch plus ~1-2 s of validation: 25 epochs in 2-3 min, plus 15 s of SentencePiece.
# Tests ~60 s, evaluate ~15 s, the benchmark ~40 s per precision, DDP ~15 s: about 5-6 min in all.
# Every stage has a hard limit cut from one 460 s budget (tests 150 s, training 270 s, evaluate 60 s,
# each benchmark 90 s, DDP 90 s, the device query 60 s), so one hung stage cannot take the others' time;
# at its limit the training is interrupted (s2s saves and the best checkpoint is still scored).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python bench/gpu_check.py "$@"
