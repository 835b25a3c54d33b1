"""Every fast path computes what the plain path computes: the decoder's torch.lstm_cell step equals
nn.LSTM on the same weights, the unpacked inference encoder equals the packed one, fused Adam equals the
plain Adam update, bf16 mixed precision (where the CPU runs it natively) stays within bf16's rounding
of fp32, decoding's linear layers on weights laid out once for oneDNN equal nn.Linear, and batches decoded on several CPU workers come out as decoding them one after another."""
from __future__ import annotations

import copy
import threading

import pytest
import torch

from s2s.data import make_batch, pad
from s2s.decoder import AttentionDecoder
from s2s.device import amp_dtype, autocast, cpu_has_fast_bf16, cpu_workers, inference_linear, parallel_map
from s2s.errors import S2SError
from s2s.search import beam_search, greedy_search
from s2s.tokenizer import BOS, EOS
from s2s.train import build_optimizer

needs_bf16 = pytest.mark.skipif(not cpu_has_fast_bf16(), reason="this CPU has no native bf16 (AMX or AVX512-BF16)")


@pytest.mark.parametrize("layers", [1, 3])
def test_lstm_cell_step_equals_nn_lstm(layers):
    torch.manual_seed(0)
    decoder = AttentionDecoder(20, 6, 8, 10, 7, num_layers=layers, dropout=0.4).eval()
    x, h, c = torch.randn(5, 6 + decoder.out_size), torch.randn(layers, 5, 8), torch.randn(layers, 5, 8)
    fast_h, fast_c = decoder._lstm_step(x, h, c)
    _, (plain_h, plain_c) = decoder.rnn(x.unsqueeze(1), (h, c))
    torch.testing.assert_close(fast_h, plain_h, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(fast_c, plain_c, atol=1e-6, rtol=1e-5)


def test_lstm_cell_step_drops_out_between_layers_in_training_only():
    torch.manual_seed(0)
    decoder = AttentionDecoder(20, 6, 8, 10, 7, num_layers=2, dropout=0.5)
    x, h, c = torch.randn(64, 6 + decoder.out_size), torch.zeros(2, 64, 8), torch.zeros(2, 64, 8)
    train_h = decoder._lstm_step(x, h, c)[0]
    eval_h = decoder.eval()._lstm_step(x, h, c)[0]
    assert torch.equal(train_h[0], eval_h[0])  # the first layer sees no dropout
    assert not torch.allclose(train_h[1], eval_h[1])


def test_fused_adam_equals_plain_adam(tiny_seq2seq, id_pairs):
    fused_model, plain_model = tiny_seq2seq(seed=3), tiny_seq2seq(seed=3)
    fused, plain = build_optimizer(fused_model, 0.01), torch.optim.Adam(plain_model.parameters(), lr=0.01, foreach=False)
    batch = make_batch(*id_pairs())
    for _ in range(5):
        for model, optimizer in ((fused_model, fused), (plain_model, plain)):
            optimizer.zero_grad()
            model(batch).loss.backward()
            optimizer.step()
    for (name, a), b in zip(fused_model.named_parameters(), plain_model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


def test_amp_is_plain_fp32_when_disabled_or_unsupported():
    cpu = torch.device("cpu")
    assert amp_dtype(cpu, False) is None
    assert amp_dtype(cpu, True) == (torch.bfloat16 if cpu_has_fast_bf16() else None)
    with autocast(cpu, False):
        assert torch.nn.functional.linear(torch.randn(2, 3), torch.randn(4, 3)).dtype == torch.float32


@needs_bf16
@pytest.mark.parametrize("bias", [True, False])
def test_inference_linear_equals_nn_linear_and_follows_weight_updates(bias):
    torch.manual_seed(0)
    layer = torch.nn.Linear(48, 33, bias=bias)
    x = torch.randn(7, 48)

    def both():  # a fresh autocast region each time: autocast caches its own bf16 copy of a weight per region
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return inference_linear(layer, x), layer(x)

    fast, plain = both()
    assert fast.dtype == plain.dtype == torch.bfloat16 and torch.equal(fast, plain)
    with torch.no_grad():
        layer.weight.mul_(-2.0)  # as an optimizer step does between validations
    fast, plain = both()
    assert torch.equal(fast, plain)
    assert list(layer.state_dict()) == (["weight", "bias"] if bias else ["weight"])  # checkpoints are unchanged
    copy.deepcopy(layer)  # the packed weight (an opaque tensor) is not part of the module
    with torch.autocast("cpu", dtype=torch.bfloat16):  # training: the plain layer, so gradients flow
        assert inference_linear(layer, x).requires_grad


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


def test_training_with_cpu_amp_runs_and_resumes(tmp_path, corpus_dir, tiny_config):
    """train.cpu_amp goes through the same loop (bf16 autocast where the CPU has it, fp32 elsewhere):
    finite losses, fp32 weights in the checkpoint, and an exact resume."""
    from s2s import checkpoint
    from s2s.train import train

    config = lambda steps: tiny_config(corpus_dir, train={"max_tokens": 80, "epochs": 10, "max_steps": steps, "cpu_amp": True})  # noqa: E731
    train(config(4), tmp_path / "a")
    train(config(2), tmp_path / "b")
    train(config(4), tmp_path / "b", resume=True)
    a, b = (checkpoint.load(tmp_path / run / checkpoint.LAST)["model"] for run in ("a", "b"))
    for name, weight in a.items():
        assert weight.dtype in (torch.float32, torch.int64, torch.bool), name
        torch.testing.assert_close(weight, b[name], msg=name)
        if weight.is_floating_point():
            assert torch.isfinite(weight).all(), name


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("layers", [1, 2])
def test_unpacked_inference_encoder_equals_packed(cell, bidirectional, layers):
    """Without gradients the CPU encoder skips packing (oneDNN's whole-sequence kernel): same states and finals."""
    from s2s.encoder import Encoder

    torch.manual_seed(0)
    enc = Encoder(50, 8, 6, layers, cell, 0.3, bidirectional, feature_dim=3).eval()
    tokens, lengths, feats = torch.randint(1, 50, (5, 9)), torch.tensor([9, 3, 1, 7, 9]), torch.randn(5, 9, 3)
    packed = enc(tokens, lengths, feats)  # gradients on: the packed path
    with torch.inference_mode():
        unpacked = enc(tokens, lengths, feats)
    assert torch.allclose(unpacked.states, packed.states, atol=1e-6)
    assert torch.allclose(unpacked.final, packed.final, atol=1e-6)
    assert torch.equal(unpacked.mask, packed.mask) and (unpacked.states[~unpacked.mask] == 0).all()


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
