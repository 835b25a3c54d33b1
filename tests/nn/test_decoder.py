"""The attention decoder: teacher forcing equals stepping, state and memory select batch rows, the
torch.lstm_cell step equals nn.LSTM on the same weights, untied embeddings are two tensors; the
Seq2Seq trains (forward and backward) on the test device, in mixed precision too."""
from __future__ import annotations

import pytest
import torch

from s2s.device import amp_dtype, autocast
from s2s.nn.decoder import AttentionDecoder
from s2s.tasks.translation import make_batch

VOCAB = 20


@pytest.mark.parametrize("tie", [False, True])
def test_teacher_forcing_equals_running_step(tiny_seq2seq, tie, id_pairs, device):
    """Logits of forward() at step t equal those of calling step() t times on the same prefix."""
    model = tiny_seq2seq(tie_embeddings=tie, dropout=0.3).eval().to(device)
    batch = make_batch(*id_pairs()).to(device)
    with torch.no_grad():
        enc = model.encoder(batch.src, batch.src_lengths)
        forced = model.decoder(batch.tgt_in, enc)  # (B, T, V)
        memory = model.decoder.memory(enc)
        state = model.decoder.init_state(memory)
        for t in range(batch.tgt_in.size(1)):
            logits, state, weights = model.decoder.step(batch.tgt_in[:, t], state, memory)
            assert torch.allclose(logits, forced[:, t], atol=1e-5), f"step {t}"
            assert torch.allclose(weights.sum(-1), torch.ones(len(weights), device=device), atol=1e-5)
            assert torch.all(weights[~enc.mask] == 0)
    assert forced.shape == (*batch.tgt_in.shape, VOCAB)


def test_decoder_state_and_memory_select_pick_batch_rows(tiny_seq2seq, id_pairs, device):
    model = tiny_seq2seq().eval().to(device)
    batch = make_batch(*id_pairs()).to(device)
    enc = model.encoder(batch.src, batch.src_lengths)
    memory = model.decoder.memory(enc)
    state = model.decoder.init_state(memory)
    index = torch.tensor([2, 0], device=device)
    picked, memory_picked = state.select(index), memory.select(index)
    assert torch.equal(picked.h, state.h[:, index]) and torch.equal(picked.c, state.c[:, index])
    assert torch.equal(picked.att, state.att[index])
    assert torch.equal(memory_picked.states, enc.states[index]) and torch.equal(memory_picked.mask, enc.mask[index])
    assert torch.equal(memory_picked.keys, memory.keys[index]) and torch.equal(memory_picked.final, enc.final[index])


def test_untied_embeddings_are_separate():
    decoder = AttentionDecoder(VOCAB, 8, 16, 16, 8, tie_embeddings=False)
    assert decoder.output.weight is not decoder.embed.weight
    assert decoder.out_size == 16 and decoder.output.weight.shape == (VOCAB, 16)


# --- the single-step LSTM fast path -------------------------------------------------------------------


@pytest.mark.parametrize("layers", [1, 3])
def test_lstm_cell_step_equals_nn_lstm(layers, device):
    """On a GPU: torch.lstm_cell's fused kernel against cuDNN's LSTM."""
    torch.manual_seed(0)
    decoder = AttentionDecoder(20, 6, 8, 10, 7, num_layers=layers, dropout=0.4).eval().to(device)
    x, h, c = (torch.randn(*shape).to(device) for shape in [(5, 6 + decoder.out_size), (layers, 5, 8), (layers, 5, 8)])
    fast_h, fast_c = decoder._lstm_step(x, h, c)
    _, (plain_h, plain_c) = decoder.rnn(x.unsqueeze(1), (h, c))
    torch.testing.assert_close(fast_h, plain_h, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(fast_c, plain_c, atol=1e-6, rtol=1e-5)


def test_lstm_cell_step_drops_out_between_layers_in_training_only(device):
    torch.manual_seed(0)
    decoder = AttentionDecoder(20, 6, 8, 10, 7, num_layers=2, dropout=0.5).to(device)
    x, h, c = torch.randn(64, 6 + decoder.out_size).to(device), torch.zeros(2, 64, 8, device=device), torch.zeros(2, 64, 8, device=device)
    train_h = decoder._lstm_step(x, h, c)[0]
    eval_h = decoder.eval()._lstm_step(x, h, c)[0]
    assert torch.equal(train_h[0], eval_h[0])  # the first layer sees no dropout
    assert not torch.allclose(train_h[1], eval_h[1])


# --- training on the test device ----------------------------------------------------------------------


@pytest.mark.parametrize("tie", [False, True])
def test_seq2seq_forward_backward_on_the_device(tiny_seq2seq, id_pairs, device, tie):
    """A training step's forward and backward: a finite loss averaged over the real target tokens, a gradient
    on every weight (on the model's device), and under the device's mixed precision (bf16 autocast on a GPU or
    a CPU with native bf16) a loss and gradients within bf16's rounding of fp32's."""
    model = tiny_seq2seq(seed=1, tie_embeddings=tie, label_smoothing=0.1).to(device)
    cpu_batch = make_batch(*id_pairs())
    batch = cpu_batch.to(device)
    assert batch.src.device.type == device.type and batch.num_tokens == cpu_batch.num_tokens == 4 + 7 + 2 + 6
    losses, grads = [], []
    for amp in (False, True):
        if amp and amp_dtype(device, True) is None:
            break  # a CPU without native bf16: mixed precision is plain fp32
        model.zero_grad(set_to_none=True)
        with autocast(device, amp):
            out = model(batch)
        out.loss.backward()
        assert out.logits.shape == (*batch.tgt_in.shape, 20) and torch.isfinite(out.loss)
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.device == p.device and torch.isfinite(p.grad).all(), name
        losses.append(out.loss.item())
        grads.append(torch.cat([p.grad.flatten().float() for p in model.parameters()]))
    if len(losses) == 2:
        assert losses[1] == pytest.approx(losses[0], rel=2e-2)
        assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.99
