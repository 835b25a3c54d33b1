"""The translation head: batches with BOS/EOS/padding, the Seq2Seq loss that ignores padding, a tiny
model that overfits one batch, tied embeddings that are one tensor; the Translator API (lists only)."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from s2s import config as config_lib
from s2s.data.sentencepiece import BOS, EOS, PAD
from s2s.errors import S2SError
from s2s.tasks.translation import Task, Translator, build_model, make_batch

VOCAB = 20


# --- batches ----------------------------------------------------------------------------------------


def test_pad_and_make_batch():
    src = [[5, 6, 7], [8], [9, 10]]
    tgt = [[11], [12, 13, 14, 15], []]
    batch = make_batch(src, tgt)
    assert batch.src.tolist() == [[5, 6, 7], [8, PAD, PAD], [9, 10, PAD]]
    assert batch.src_lengths.tolist() == [3, 1, 2]
    assert batch.tgt_in.shape == batch.tgt_out.shape == (3, 5)
    assert batch.tgt_in.tolist() == [[BOS, 11, PAD, PAD, PAD], [BOS, 12, 13, 14, 15], [BOS, PAD, PAD, PAD, PAD]]
    assert batch.tgt_out.tolist() == [[11, EOS, PAD, PAD, PAD], [12, 13, 14, 15, EOS], [EOS, PAD, PAD, PAD, PAD]]
    assert batch.num_tokens == 2 + 5 + 1 == int((batch.tgt_out != PAD).sum())
    # Teacher forcing: the output sequence is the input sequence shifted by one.
    for i, t in enumerate(tgt):
        assert batch.tgt_in[i, 1 : len(t) + 1].tolist() == batch.tgt_out[i, : len(t)].tolist() == t
    assert batch.src.dtype == batch.tgt_in.dtype == torch.long
    moved = batch.to(torch.device("cpu"))
    assert moved.num_tokens == batch.num_tokens and torch.equal(moved.src, batch.src)


def test_first_decoder_input_is_bos(id_pairs):
    batch = make_batch(*id_pairs())
    assert torch.all(batch.tgt_in[:, 0] == BOS)


# --- Seq2Seq ----------------------------------------------------------------------------------------


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
    config = config_lib.from_dict({"encoder": {"emb_dim": 8, "hidden_size": 8},
                                   "translation": {"dec_hidden_size": 16, "attn_size": 8, "tie_embeddings": True}})
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


def test_multi_layer_decoder_runs(id_pairs):
    config = config_lib.from_dict({"encoder": {"emb_dim": 8, "hidden_size": 8, "num_layers": 2, "cell": "gru"},
                                   "translation": {"dec_hidden_size": 8, "attn_size": 8, "dec_layers": 2}})
    torch.manual_seed(0)
    model = build_model(config, VOCAB, VOCAB).eval()
    batch = make_batch(*id_pairs())
    out = model(batch)
    assert out.logits.shape == (*batch.tgt_in.shape, VOCAB) and torch.isfinite(out.loss)
    state = model.decoder.init_state(model.encode(batch.src, batch.src_lengths))
    assert state.h.shape == (2, batch.src.size(0), 8)


# --- the Translator API behind `s2s translate` -------------------------------------------------


@pytest.fixture(scope="module")
def translator(trained_run):
    return Translator.load(trained_run, device="cpu")


@pytest.mark.parametrize("beam_size", [1, 3])
def test_translator_output_does_not_depend_on_batching(translator, pairs, beam_size):
    sentences = [s for s, _ in pairs(9, seed=5)] + [""]
    full = translator.translate_ids(sentences, beam_size=beam_size, batch_size=64)
    assert translator.translate_ids(sentences, beam_size=beam_size, batch_size=2) == full
    assert [translator.translate_ids([s], beam_size=beam_size)[0] for s in sentences] == full
    assert full[-1] == []


def test_translator_respects_the_length_limit(translator, pairs):
    d = translator.search
    for s, _ in pairs(6, seed=6):
        n = len(translator.sp_src.encode(s))
        for beam_size in (1, 3):
            (hyp,) = translator.translate_ids([s], beam_size=beam_size)
            assert len(hyp) + 1 <= int(n * d.max_len_a) + d.max_len_b


def test_translator_leaves_training_mode_as_it_was(translator):
    translator.model.train()
    try:
        translator.translate(["der hund"])
        assert translator.model.training
    finally:
        translator.model.eval()


def test_translator_refuses_a_bare_string(translator):
    """A string is a sequence of characters: each would have been translated as a sentence of its own."""
    for call in (lambda: translator.translate("der hund"), lambda: translator.translate_ids("der hund"),
                 lambda: translator.evaluate("der hund", ["the dog"]), lambda: translator.evaluate(["der hund"], "the dog")):
        with pytest.raises(TypeError, match="takes a list of sentences, got a string: pass \\[sentence\\] for one"):
            call()
    assert translator.translate(("der hund", "")) == translator.translate(["der hund", ""])  # any other sequence is one


def test_translator_evaluate_needs_aligned_sentences(translator):
    with pytest.raises(S2SError, match="no sentences to score"):
        translator.evaluate([], [])  # sacreBLEU failed with an IndexError
    with pytest.raises(S2SError, match="2 sources but 1 references"):
        translator.evaluate(["der hund", "die katze"], ["the dog"])


def test_training_refuses_an_empty_dev_set_before_it_starts(tmp_path, corpus_writer, tiny_config):
    """Validation scores the dev set with sacreBLEU, which fails on none: refused when the data is read."""
    data = corpus_writer(tmp_path / "data", {"train": 20, "val": 0, "test": 2})
    with pytest.raises(S2SError, match=r"val\.\{de,en\}: no dev sentences"):
        Task(tiny_config(data), tmp_path / "run")


def _train(config_path, run, *extra) -> int:
    from s2s.cli import main

    return main(["-q", "train", str(config_path), "--out", str(run), *extra])


def test_token_store_holds_the_training_pairs_and_is_reused_by_resume(tmp_path, corpus_writer, tiny_config, caplog):
    """The pairs batches read from disk are the corpus encoded; --resume opens the store instead of rebuilding it."""
    data = corpus_writer(tmp_path / "data", {"train": 30, "val": 4, "test": 2})
    config = tiny_config(data, data={"max_train": 25}, train={"max_steps": 3})
    path = tmp_path / "tiny.yaml"
    config_lib.save(config, path)
    assert _train(path, tmp_path / "run") == 0
    task = Task(config, tmp_path / "run", resume=True)
    sources = (data / "train.de").read_text().splitlines()[:25]
    assert len(task.store) == 25 and task.store.get("src", range(25)) == task.sp_src.encode(sources)
    assert list(task.lengths) == [max(len(s), len(t) + 1) for s, t in zip(task.store.get("src", range(25)), task.store.get("tgt", range(25)))]
    built = (tmp_path / "run" / "store" / "src.ids").stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        assert _train(path, tmp_path / "run", "--resume", "--set", "train.max_steps=5") == 0
    assert (tmp_path / "run" / "store" / "src.ids").stat().st_mtime_ns == built and "rebuilding" not in caplog.text


def test_token_store_is_rebuilt_when_the_data_changed_and_a_damaged_one_is_refused(tmp_path, corpus_writer, tiny_config, capsys, caplog):
    data = corpus_writer(tmp_path / "data", {"train": 30, "val": 4, "test": 2})
    path = tmp_path / "tiny.yaml"
    config_lib.save(tiny_config(data, train={"max_steps": 2}), path)
    run = tmp_path / "run"
    assert _train(path, run) == 0
    with (data / "train.de").open("a") as f, (data / "train.en").open("a") as g:
        f.write("der hund sieht ein haus\n")
        g.write("the dog sees a house\n")
    with caplog.at_level(logging.INFO):
        assert _train(path, run, "--resume", "--set", "train.max_steps=4") == 0
    assert "store: built from other data; rebuilding it" in caplog.text
    assert len(Task(tiny_config(data), run, resume=True).store) == 31
    ids = run / "store" / "tgt.ids"
    ids.write_bytes(ids.read_bytes()[:-1])
    capsys.readouterr()
    assert _train(path, run, "--resume", "--set", "train.max_steps=6") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {ids}: truncated or damaged token store") and "rebuilt" in err and "\n" not in err


# --- n-best, attention and forced scoring -------------------------------------------------------------


@pytest.mark.parametrize("beam_size", [1, 4])
def test_nbest_is_sorted_and_its_first_is_the_translation(translator, pairs, beam_size):
    sentences = [s for s, _ in pairs(8, seed=7)] + [""]
    n = beam_size
    lists = translator.translate_nbest(sentences, n_best=n, beam_size=beam_size, batch_size=3)
    assert [nb.hypotheses[0].text for nb in lists[:-1]] == translator.translate(sentences[:-1], beam_size=beam_size)
    assert lists[-1].hypotheses == [] and lists[-1].source_pieces == []
    alpha = translator.search.length_penalty
    for s, nb in zip(sentences, lists[:-1]):
        assert nb.source_pieces == translator.sp_src.encode(s, out_type=str)
        assert 1 <= len(nb.hypotheses) <= n
        scores = [h.score for h in nb.hypotheses]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.pieces) for h in nb.hypotheses}) == len(nb.hypotheses)  # distinct hypotheses
        for h in nb.hypotheses:
            assert h.logprob <= 0 and h.score == pytest.approx(h.logprob / ((5 + len(h.pieces) + 1) / 6) ** alpha)
            assert h.text == translator.sp_tgt.decode_pieces(h.pieces) and h.attention is None
    # n_best=1 is the same first hypothesis.
    assert translator.translate_nbest(sentences, n_best=1, beam_size=beam_size)[0].hypotheses[0] == lists[0].hypotheses[0]


def test_nbest_attention_rows_sum_to_one_over_the_source(translator, pairs):
    sentences = [s for s, _ in pairs(8, seed=8)]
    plain = translator.translate_nbest(sentences, n_best=3, beam_size=3)
    lists = translator.translate_nbest(sentences, n_best=3, beam_size=3, attention=True, batch_size=2)
    for nb, ref in zip(lists, plain):
        assert [h.pieces for h in nb.hypotheses] == [h.pieces for h in ref.hypotheses]  # attention changes nothing else
        for h in nb.hypotheses:
            weights = torch.tensor(h.attention)
            assert weights.shape == (len(h.pieces), len(nb.source_pieces))  # one row per target piece, EOS's left out
            assert torch.allclose(weights.sum(1), torch.ones(len(h.pieces)), atol=1e-5) and bool((weights >= 0).all())
            assert h.alignment == [(int(weights[j].argmax()), j) for j in range(len(h.pieces))]
            assert all(0 <= i < len(nb.source_pieces) for i, _ in h.alignment)
            record = json.loads(nb.to_json())["hypotheses"][0]
            assert set(record) == {"text", "pieces", "logprob", "score", "attention", "alignment"}


def test_nbest_attention_does_not_depend_on_batching(translator, pairs):
    """A sentence's weights are its own: other, longer sources in the batch (padding) change nothing."""
    sentences = [s for s, _ in pairs(6, seed=9)]
    together = translator.translate_nbest(sentences, n_best=2, beam_size=2, attention=True, batch_size=6)
    for s, nb in zip(sentences, together):
        (alone,) = translator.translate_nbest([s], n_best=2, beam_size=2, attention=True)
        for h, g in zip(nb.hypotheses, alone.hypotheses):
            assert h.pieces == g.pieces and h.alignment == g.alignment
            assert torch.allclose(torch.tensor(h.attention), torch.tensor(g.attention), atol=1e-5)


def test_nbest_larger_than_the_beam_is_refused(translator):
    with pytest.raises(S2SError, match="use a beam size >= 4"):
        translator.translate_nbest(["der hund"], n_best=4, beam_size=3)


def test_score_of_beam_output_is_the_beam_logprob(translator, pairs):
    """Teacher forcing the beam's own pieces gives the total log-probability beam search reported."""
    sentences = [s for s, _ in pairs(8, seed=10)]
    lists = translator.translate_nbest(sentences, n_best=3, beam_size=3)
    sources = [s for s, nb in zip(sentences, lists) for _ in nb.hypotheses]
    hyps = [h for nb in lists for h in nb.hypotheses]
    assert len(hyps) > len(sentences)
    scored = translator.score(sources, [" ".join(h.pieces) for h in hyps], batch_size=4, pieces=True)
    for h, got in zip(hyps, scored):
        assert got.pieces == h.pieces
        assert got.logprob == pytest.approx(h.logprob, abs=1e-4)
        assert len(got.token_logprobs) == len(h.pieces) + 1 and got.per_token == pytest.approx(got.logprob / (len(h.pieces) + 1))
    # Text is encoded with the target SentencePiece model (here the best hypotheses' text, whatever pieces it gives).
    texts = [nb.hypotheses[0].text for nb in lists]
    encoded = [" ".join(translator.sp_tgt.encode(t, out_type=str)) for t in texts]
    assert translator.score(sentences, texts) == translator.score(sentences, encoded, pieces=True)
    assert translator.score([""], ["the dog"]) == [None]
    with pytest.raises(S2SError, match="2 sources but 1 targets"):
        translator.score(["a", "b"], ["c"])
