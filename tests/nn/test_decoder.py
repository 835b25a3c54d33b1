"""The attention decoder and the Seq2Seq model: teacher forcing equals stepping, the loss ignores
padding, a tiny model overfits one batch, tied embeddings are one tensor."""
from __future__ import annotations

import pytest
import torch

from s2s import config as config_lib
from s2s.data import make_batch
from s2s.decoder import AttentionDecoder, select_encoder
from s2s.models import build_model
from s2s.tokenizer import BOS

VOCAB = 20


@pytest.mark.parametrize("tie", [False, True])
def test_teacher_forcing_equals_running_step(tiny_seq2seq, tie, id_pairs):
    """Logits of forward() at step t equal those of calling step() t times on the same prefix."""
    model = tiny_seq2seq(tie_embeddings=tie, dropout=0.3).eval()
    batch = make_batch(*id_pairs())
    with torch.no_grad():
        enc = model.encoder(batch.src, batch.src_lengths)
        forced = model.decoder(batch.tgt_in, enc)  # (B, T, V)
        proj_keys = model.decoder.attention.project_keys(enc.states)
        state = model.decoder.init_state(enc)
        for t in range(batch.tgt_in.size(1)):
            logits, state, weights = model.decoder.step(batch.tgt_in[:, t], state, proj_keys, enc)
            assert torch.allclose(logits, forced[:, t], atol=1e-5), f"step {t}"
            assert torch.allclose(weights.sum(-1), torch.ones(len(weights)), atol=1e-5)
            assert torch.all(weights[~enc.mask] == 0)
    assert forced.shape == (*batch.tgt_in.shape, VOCAB)


def test_decoder_state_select_picks_batch_rows(tiny_seq2seq, id_pairs):
    model = tiny_seq2seq().eval()
    batch = make_batch(*id_pairs())
    enc = model.encoder(batch.src, batch.src_lengths)
    state = model.decoder.init_state(enc)
    index = torch.tensor([2, 0])
    picked, enc_picked = state.select(index), select_encoder(enc, index)
    assert torch.equal(picked.h, state.h[:, index]) and torch.equal(picked.c, state.c[:, index])
    assert torch.equal(picked.att, state.att[index])
    assert torch.equal(enc_picked.states, enc.states[index]) and torch.equal(enc_picked.mask, enc.mask[index])


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_loss_ignores_padding(tiny_seq2seq, label_smoothing, id_pairs):
    """The batch loss (mean per target token) equals the per-sentence losses weighted by their token counts."""
    model = tiny_seq2seq(label_smoothing=label_smoothing).eval()
    src, tgt = id_pairs()
    with torch.no_grad():
        out = model(make_batch(src, tgt))
        alone = [model(make_batch([s], [t])) for s, t in zip(src, tgt)]
    assert out.num_tokens == sum(len(t) + 1 for t in tgt)  # + EOS each
    assert out.num_tokens == sum(a.num_tokens for a in alone)
    weighted = sum(a.loss * a.num_tokens for a in alone) / out.num_tokens
    assert torch.allclose(out.loss, weighted, atol=1e-5)


def test_tiny_model_overfits_one_batch(tiny_seq2seq, id_pairs):
    model = tiny_seq2seq(seed=1)
    batch = make_batch(*id_pairs(seed=1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    first = None
    for _ in range(120):
        loss = model(batch).loss
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        final = model(batch).loss.item()
        predicted = model(batch).logits.argmax(-1)
    assert final < 0.1 * first, (first, final)
    real = batch.tgt_out != 0
    assert torch.equal(predicted[real], batch.tgt_out[real])  # every target token is reproduced


def test_tied_embeddings_share_one_weight():
    config = config_lib.from_dict({"model": {"emb_dim": 8, "hidden_size": 8, "dec_hidden_size": 16, "attn_size": 8,
                                             "tie_embeddings": True}})
    model = build_model(config, VOCAB, VOCAB + 3)
    decoder = model.decoder
    assert decoder.output.weight is decoder.embed.weight
    assert decoder.output.weight.shape == (VOCAB + 3, 8)
    # The attentional vector lives in embedding space so the shared matrix fits.
    assert decoder.out_size == 8
    # One tensor: an update through the output layer is seen by the embedding.
    with torch.no_grad():
        decoder.output.weight[5].fill_(7.0)
    assert torch.all(decoder.embed.weight[5] == 7.0)
    # And it stays one tensor after a state_dict round trip, as when a checkpoint is loaded.
    clone = build_model(config, VOCAB, VOCAB + 3)
    clone.load_state_dict(model.state_dict())
    assert clone.decoder.output.weight is clone.decoder.embed.weight
    assert torch.equal(clone.decoder.embed.weight, model.decoder.embed.weight)
    n_unique = len({p.data_ptr() for p in model.parameters()})
    assert n_unique == len(list(model.parameters()))  # parameters() lists the shared one once


def test_untied_embeddings_are_separate():
    decoder = AttentionDecoder(VOCAB, 8, 16, 16, 8, tie_embeddings=False)
    assert decoder.output.weight is not decoder.embed.weight
    assert decoder.out_size == 16 and decoder.output.weight.shape == (VOCAB, 16)


def test_multi_layer_decoder_runs(id_pairs):
    config = config_lib.from_dict({"model": {"emb_dim": 8, "hidden_size": 8, "dec_hidden_size": 8, "attn_size": 8,
                                             "num_layers": 2, "dec_layers": 2, "cell": "gru"}})
    torch.manual_seed(0)
    model = build_model(config, VOCAB, VOCAB).eval()
    batch = make_batch(*id_pairs())
    out = model(batch)
    assert out.logits.shape == (*batch.tgt_in.shape, VOCAB) and torch.isfinite(out.loss)
    state = model.decoder.init_state(model.encoder(batch.src, batch.src_lengths))
    assert state.h.shape == (2, batch.src.size(0), 8)


def test_first_decoder_input_is_bos(id_pairs):
    batch = make_batch(*id_pairs())
    assert torch.all(batch.tgt_in[:, 0] == BOS)
