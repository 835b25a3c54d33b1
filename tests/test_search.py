"""Greedy and beam search: beam 1 is greedy, a batch decodes like its sentences alone,
and every output keeps to its own length limit."""
from __future__ import annotations

import pytest
import torch

import s2s.search
from s2s.data.batching import pad
from s2s.data.sentencepiece import BOS, EOS
from s2s.search import beam_search, best_extensions, greedy_search, in_flight_groups, length_penalty, max_lengths

SEEDS = [0, 1, 2, 3]


@pytest.fixture
def sharp_model(tiny_seq2seq, device):
    """A random tiny model with large weights, so that outputs depend on the input and end
    (with EOS) at different lengths instead of repeating one token to the limit. On the test device
    (the weights drawn on the CPU first, so they are the same on every device)."""
    def make(seed: int):
        model = tiny_seq2seq(seed=seed, dropout=0.3)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.8)
        return model.eval().to(device)

    return make


@pytest.fixture
def sources(device):
    """sources(seed, lengths=...) -> (sentences as id lists, padded ids (B, S) and lengths (B,) on the test device)."""
    def make(seed: int, lengths=(1, 3, 5, 7, 2, 6, 4, 4)):
        g = torch.Generator().manual_seed(seed)
        sentences = [torch.randint(4, 20, (n,), generator=g).tolist() for n in lengths]
        src, src_lengths = pad(sentences)
        return sentences, src.to(device), src_lengths.to(device)

    return make


def _one(sentence: list[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One sentence as a batch of one: ids (1, S) and lengths (1,) on `device`."""
    return torch.tensor([sentence], device=device), torch.tensor([len(sentence)], device=device)


def _decode(model, src, src_lengths, limits, beam_size):
    if beam_size == 0:
        return greedy_search(model, src, src_lengths, limits, BOS, EOS)
    return beam_search(model, src, src_lengths, limits, BOS, EOS, beam_size)


@pytest.mark.parametrize("seed", SEEDS)
def test_beam_size_1_equals_greedy(sharp_model, sources, seed):
    model = sharp_model(seed)
    _, src, src_lengths = sources(seed)
    limits = max_lengths(src_lengths, 1.0, 3)
    greedy = greedy_search(model, src, src_lengths, limits, BOS, EOS)
    assert beam_search(model, src, src_lengths, limits, BOS, EOS, beam_size=1) == greedy
    assert beam_search(model, src, src_lengths, limits, BOS, EOS, beam_size=1, alpha=0.0) == greedy


@pytest.mark.parametrize("beam_size", [0, 3], ids=["greedy", "beam3"])
@pytest.mark.parametrize("seed", SEEDS)
def test_batch_decoding_equals_decoding_alone(sharp_model, sources, device, seed, beam_size):
    model = sharp_model(seed)
    sentences, src, src_lengths = sources(seed)
    limits = max_lengths(src_lengths, 1.0, 3)
    batch = _decode(model, src, src_lengths, limits, beam_size)
    assert len(batch) == len(sentences)
    for i, s in enumerate(sentences):
        alone = _decode(model, *_one(s, device), limits[i : i + 1], beam_size)
        assert alone == [batch[i]], f"sentence {i}"



class InterfaceOnly:
    """A model with only what search may use: encode, init_state, step, vocab_size. The tiny Seq2Seq is
    held in closures, so there is no .encoder, .decoder or forward to reach for."""

    __slots__ = ("encode", "init_state", "step", "vocab_size", "calls")

    def __init__(self, model):
        calls = {"encode": 0, "init_state": 0, "step": 0}

        def counted(name, fn):
            def call(*args):
                calls[name] += 1
                return fn(*args)
            return call

        self.encode = counted("encode", lambda src, lengths: model.encode(src, lengths))
        self.init_state = counted("init_state", lambda memory: model.init_state(memory))
        self.step = counted("step", lambda prev, state, memory: model.step(prev, state, memory))
        self.vocab_size = model.vocab_size
        self.calls = calls


@pytest.mark.parametrize("beam_size, in_flight", [(0, 0), (1, 0), (3, 0), (3, 2), (30, 0), (30, 3)],
                         ids=["greedy", "beam1", "beam3", "beam3-in-flight", "beam30", "beam30-in-flight"])
@pytest.mark.parametrize("seed", SEEDS)
def test_search_uses_only_the_model_interface(sharp_model, sources, seed, beam_size, in_flight):
    """Search decodes any object with encode / init_state / step / vocab_size: a wrapper exposing only
    those gives what the Seq2Seq itself gives (beam 30, wider than the vocabulary, starts without
    fanning out; in flight, new sentences join a running batch)."""
    model = sharp_model(seed)
    wrapper = InterfaceOnly(model)
    assert not hasattr(wrapper, "decoder") and not hasattr(wrapper, "encoder") and not hasattr(wrapper, "forward")
    _, src, src_lengths = sources(seed)
    limits = max_lengths(src_lengths, 1.0, 3)
    if beam_size == 0:
        expected = greedy_search(model, src, src_lengths, limits, BOS, EOS)
        assert greedy_search(wrapper, src, src_lengths, limits, BOS, EOS) == expected
    else:
        expected = beam_search(model, src, src_lengths, limits, BOS, EOS, beam_size, in_flight=in_flight)
        assert beam_search(wrapper, src, src_lengths, limits, BOS, EOS, beam_size, in_flight=in_flight) == expected
    assert all(wrapper.calls.values()), wrapper.calls  # it did decode through the wrapper

@pytest.mark.parametrize("in_flight", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("seed", SEEDS)
def test_in_flight_batching_decodes_as_all_at_once(sharp_model, sources, seed, in_flight):
    """With at most `in_flight` sentences decoding at a time, sentences that start as others finish
    (shorter or longer sources than the running ones, at their own length limits) decode as they do
    in one batch. A beam of 30 (wider than the 20-type vocabulary) starts even the first with 30 rows."""
    model = sharp_model(seed)
    _, src, src_lengths = sources(seed)
    limits = max_lengths(src_lengths, 1.0, 3)
    for beam_size in (3, 30):
        at_once = beam_search(model, src, src_lengths, limits, BOS, EOS, beam_size)
        assert beam_search(model, src, src_lengths, limits, BOS, EOS, beam_size, in_flight=in_flight) == at_once


@pytest.mark.parametrize("beam_size", [1, 3, 30])
@pytest.mark.parametrize("seed", SEEDS)
def test_sentences_fed_in_while_the_search_runs_get_beam_hypotheses_answers(sharp_model, sources, seed, beam_size):
    """beam_steps with sentences arriving late, a few at a time (fewer than there is room for, the source asked
    when nothing waits, the batch emptying before the last), gives each sentence the hypotheses beam_hypotheses
    gives it among all at once, each sentence's handed back the step it ends."""
    from s2s.search import beam_hypotheses, beam_steps

    model = sharp_model(seed)
    sentences, src, src_lengths = sources(seed)
    limits = max_lengths(src_lengths, 1.0, 3)
    at_once = beam_hypotheses(model, src, src_lengths, limits, BOS, EOS, beam_size, 0.7, attention=True)
    arrivals = [(0, [3, 0]), (1, [5]), (2, [1, 6, 2]), (4, [7]), (40, [4])]  # (step, sentences), the last after all end
    step, given, started, ended, got = 0, [], {}, {}, {}

    def source(room):
        waiting = [i for when, ids in arrivals if when <= step for i in ids if i not in started]
        if not waiting and room == 4 and len(started) < len(sentences):  # nothing in flight: wait for the next
            waiting = [i for _, ids in arrivals for i in ids if i not in started][:1]
        if not waiting:
            return None
        batch = waiting[:room]
        given.extend(batch)
        started.update((i, step) for i in batch)
        tokens, lengths = pad([sentences[i] for i in batch])
        return tokens.to(src.device), lengths.to(src.device), limits[batch]

    def on_finished(number, hyps):
        assert given[number] not in got
        got[given[number]], ended[given[number]] = hyps, step

    for n in beam_steps(model, source, on_finished, BOS, EOS, beam_size, 0.7, 4, attention=True):
        assert 1 <= n <= 4
        step += 1
    assert sorted(got) == list(range(len(sentences))) and started[4] > max(ended[i] for i in range(len(sentences)) if i != 4)
    for i, hyps in got.items():
        assert [h.tokens for h in hyps] == [h.tokens for h in at_once[i]], f"sentence {i}"
        assert [h.score for h in hyps] == pytest.approx([h.score for h in at_once[i]], abs=1e-4)
        for h, g in zip(hyps, at_once[i]):
            assert torch.allclose(h.attention, g.attention, atol=1e-5)
        assert len(hyps[-1].tokens) == ended[i] - started[i]  # its last hypothesis ended at that step


def _spread_weights(model):
    """`model` in eval mode with weights drawn from N(0, 0.5): sharp enough distributions that beams diverge."""
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model


def test_in_flight_groups_deal_batches_round_robin():
    order = list(range(100, 145))  # 45 sentences: batches of 4, the last of 1
    groups = in_flight_groups(order, batch_size=4, workers=2, per_group=3)
    assert groups[0] == [100, 101, 102, 103, 108, 109, 110, 111, 116, 117, 118, 119]  # batches 0, 2, 4
    assert groups[1] == [104, 105, 106, 107, 112, 113, 114, 115, 120, 121, 122, 123]  # batches 1, 3, 5
    assert sorted(i for g in groups for i in g) == order and all(g == sorted(g) for g in groups)
    assert [len(g) for g in groups] == [12, 12, 12, 9]  # batches 6, 8, 10 and 7, 9, 11 (of 1 sentence)
    assert in_flight_groups(order, batch_size=64, workers=2) == [order]
    assert in_flight_groups([], batch_size=4, workers=2) == []


def test_sharp_models_end_outputs_at_different_lengths(sharp_model, sources):
    """The fixture is useful only if some outputs end (EOS) before their limit, at several lengths."""
    ended_early, lengths = 0, set()
    for seed in SEEDS:
        _, src, src_lengths = sources(seed)
        limits = max_lengths(src_lengths, 1.0, 3)
        for hyp, limit in zip(greedy_search(sharp_model(seed), src, src_lengths, limits, BOS, EOS), limits.tolist()):
            ended_early += len(hyp) < limit - 1
            lengths.add(len(hyp))
    assert ended_early >= 5 and len(lengths) >= 4


@pytest.mark.parametrize("beam_size", [0, 1, 3, 5], ids=["greedy", "beam1", "beam3", "beam5"])
@pytest.mark.parametrize("seed", SEEDS)
def test_outputs_respect_their_own_length_limit(sharp_model, sources, seed, beam_size):
    """Limits count tokens including EOS, so a hypothesis (without EOS) has at most limit - 1 tokens."""
    model = sharp_model(seed)
    _, src, src_lengths = sources(seed)
    limits = torch.tensor([1, 2, 3, 4, 5, 6, 1, 2])  # per sentence, unrelated to the source lengths
    hyps = _decode(model, src, src_lengths, limits, beam_size)
    for hyp, limit in zip(hyps, limits.tolist()):
        assert len(hyp) <= limit - 1
        assert EOS not in hyp
    assert hyps[0] == [] and hyps[6] == []  # limit 1: only EOS fits


@pytest.mark.parametrize("seed", SEEDS)
def test_greedy_stops_at_the_limit_or_where_the_model_says_eos(sharp_model, sources, device, seed):
    """Check greedy against a plain step-by-step argmax decode of each sentence."""
    model = sharp_model(seed)
    sentences, src, src_lengths = sources(seed)
    limits = max_lengths(src_lengths, 1.0, 3)
    hyps = greedy_search(model, src, src_lengths, limits, BOS, EOS)
    with torch.no_grad():
        for s, hyp, limit in zip(sentences, hyps, limits.tolist()):
            memory = model.encode(*_one(s, device))
            state, prev, out = model.init_state(memory), torch.tensor([BOS], device=device), []
            for _ in range(limit - 1):
                logits, state, _ = model.step(prev, state, memory)
                prev = logits.argmax(-1)
                if int(prev) == EOS:
                    break
                out.append(int(prev))
            assert hyp == out


def _log_prob(model, source: list[int], hyp: list[int]) -> float:
    """log p(hyp + EOS | source) under the model, by teacher forcing."""
    device = next(model.parameters()).device
    with torch.no_grad():
        enc = model.encoder(*_one(source, device))
        logits = model.decoder(torch.tensor([[BOS] + hyp], device=device), enc)[0]
        logp = torch.log_softmax(logits.float(), -1)
        return float(logp.gather(1, torch.tensor(hyp + [EOS], device=device).unsqueeze(1)).sum())


@pytest.mark.parametrize("seed", SEEDS)
def test_beam_finds_at_least_greedy_score_on_these_inputs(sharp_model, sources, seed):
    """Not a theorem (the greedy prefix can fall out of the beam), but it holds on these inputs:
    with no length penalty, beam 5 finds a hypothesis at least as likely as greedy's."""
    model = sharp_model(seed)
    sentences, src, src_lengths = sources(seed)
    limits = max_lengths(src_lengths, 1.0, 3)
    greedy = greedy_search(model, src, src_lengths, limits, BOS, EOS)
    beam = beam_search(model, src, src_lengths, limits, BOS, EOS, beam_size=5, alpha=0.0)
    for s, g, b in zip(sentences, greedy, beam):
        assert _log_prob(model, s, b) >= _log_prob(model, s, g) - 1e-5


def _plain_beam_search(model, source: list[int], limit: int, beam_size: int, alpha: float, min_len: int = 0) -> list[int]:
    """The textbook beam search, one sentence and one beam at a time, with the batched search's rules:
    every live beam offers all V extensions (only EOS at the length limit); the K best are kept; an
    EOS among them is a finished hypothesis (scored by log p / length penalty); the sentence ends when
    the best of the K is EOS or the limit is reached; before step min_len EOS is not offered (but at the limit)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        memory = model.encode(*_one(source, device))
        beams = [(0.0, [], model.init_state(memory))]  # (log p, tokens, state)
        finished = []
        for t in range(limit):
            candidates = []
            for score, tokens, state in beams:
                prev = torch.tensor([tokens[-1] if tokens else BOS], device=device)
                logits, new_state, _ = model.step(prev, state, memory)
                logp = torch.log_softmax(logits.float(), -1)[0].tolist()
                allowed = [EOS] if t + 1 >= limit else [w for w in range(len(logp)) if w != EOS or t + 1 >= min_len]
                candidates += [(score + logp[w], tokens + [w], new_state) for w in allowed]
            best = sorted(candidates, key=lambda c: -c[0])[:beam_size]
            for score, tokens, _ in best:
                if tokens[-1] == EOS:
                    finished.append((score / length_penalty(t + 1, alpha), tokens[:-1]))
            if best[0][1][-1] == EOS:
                break
            beams = [c for c in best if c[1][-1] != EOS]
        return max(finished, key=lambda f: f[0])[1]


@pytest.mark.parametrize("chunk", [64, 3], ids=["one-chunk", "chunks-of-3"])
@pytest.mark.parametrize("beam_size", [2, 5])
@pytest.mark.parametrize("seed", range(8))
def test_batched_beam_search_equals_the_plain_one(tiny_seq2seq, sources, device, monkeypatch, seed, beam_size, chunk):
    """The batched search (all sentences and beams at once, K best tokens per beam, one row per
    sentence at the first step, finished sentences dropped) finds what the textbook search finds.
    Weights of std 0.5, room to grow (2 x source + 6) and a strong length penalty make the
    hypotheses' lengths and normalised scores compete: a penalty off by one token, or a search that
    stops late, fails here. Chunks of 3 tokens split the 20-type vocabulary into 7 chunks, the last
    one shorter (see best_extensions)."""
    monkeypatch.setattr(s2s.search, "VOCAB_CHUNK", chunk)
    model = _spread_weights(tiny_seq2seq(seed=seed)).to(device)
    sentences, src, src_lengths = sources(seed)
    limits = max_lengths(src_lengths, 2.0, 6)
    hyps = beam_search(model, src, src_lengths, limits, BOS, EOS, beam_size, alpha=2.0)
    for s, hyp, limit in zip(sentences, hyps, limits.tolist()):
        assert hyp == _plain_beam_search(model, s, limit, beam_size, alpha=2.0)


@pytest.mark.parametrize("vocab", [1, 5, 64, 100, 130])
@pytest.mark.parametrize("width", [1, 4])
@pytest.mark.parametrize("chunk", [1, 8, 64])
def test_best_extensions_equal_a_top_k_over_all_extensions(vocab, width, chunk, device):
    """Chunks that divide the vocabulary, do not, or are larger than it; one beam or several; dead
    beams (score -inf) and rows at the length limit (-inf but for one token)."""
    g = torch.Generator().manual_seed(vocab * 100 + width * 10 + chunk)
    n, k = 6, min(5, width * vocab)
    logp = torch.log_softmax(torch.randn(n * width, vocab, generator=g) * 3, dim=-1)
    scores = -torch.rand(n, width, generator=g) * 4
    if width > 1:
        scores[0, 1:] = float("-inf")  # one live beam
        scores[1, 0] = float("-inf")
    logp[2 * width] = float("-inf")
    logp[2 * width, 0] = -0.5
    top, beam, token = (x.cpu() for x in best_extensions(logp.to(device), scores.to(device), k, chunk))
    everything = (scores.view(-1, 1) + logp).view(n, width * vocab)
    expected, index = everything.topk(k, dim=1)
    assert torch.equal(top, expected)
    finite = expected > float("-inf")  # among -inf candidates any pick is right
    assert torch.equal(beam[finite], (index // vocab)[finite]) and torch.equal(token[finite], (index % vocab)[finite])
    assert bool((token >= 0).all() and (token < vocab).all() and (beam < width).all())


def test_max_lengths_and_length_penalty():
    assert max_lengths(torch.tensor([1, 4, 10]), 1.5, 2).tolist() == [3, 8, 17]
    assert length_penalty(7, 0.0) == 1.0
    assert length_penalty(1, 1.0) == 1.0
    assert length_penalty(3, 0.5) < length_penalty(4, 0.5)


def test_beam_wider_than_the_vocabulary(tiny_seq2seq, sources, device):
    """A beam of 30 over a 20-type vocabulary still decodes every sentence within its limit."""
    model = tiny_seq2seq(seed=1).eval().to(device)
    sentences, src, src_lengths = sources(0)
    limits = torch.full_like(src_lengths, 6)
    hyps = beam_search(model, src, src_lengths, limits, BOS, EOS, 30)
    assert len(hyps) == len(sentences) and all(len(h) < 6 for h in hyps)


@pytest.mark.parametrize("beam_size, in_flight", [(0, 0), (1, 0), (3, 0), (3, 3), (30, 0)],
                         ids=["greedy", "beam1", "beam3", "beam3-in-flight", "beam30"])
@pytest.mark.parametrize("seed", SEEDS)
def test_min_len_equal_to_the_limits_decodes_exactly_that_many_steps(sharp_model, sources, seed, beam_size, in_flight):
    """min_len = limit = L: every output has L - 1 tokens (then EOS), whatever the model prefers,
    also for sentences that join a running batch (in flight) and beams wider than the vocabulary."""
    model = sharp_model(seed)
    _, src, src_lengths = sources(seed)
    for L in (1, 2, 5):
        limits = torch.full_like(src_lengths, L).cpu()
        if beam_size == 0:
            hyps = greedy_search(model, src, src_lengths, limits, BOS, EOS, min_len=L)
        else:
            hyps = beam_search(model, src, src_lengths, limits, BOS, EOS, beam_size, in_flight=in_flight, min_len=L)
        assert [len(h) for h in hyps] == [L - 1] * len(hyps), L
        assert all(EOS not in h for h in hyps)


@pytest.mark.parametrize("beam_size", [0, 1, 3], ids=["greedy", "beam1", "beam3"])
@pytest.mark.parametrize("seed", SEEDS)
def test_min_len_below_and_above_the_limits(sharp_model, sources, seed, beam_size):
    """Outputs have at least min_len - 1 tokens; a limit below min_len still ends the sentence at the limit;
    min_len 0 and 1 (EOS allowed from the first step) decode as the call without it."""
    model = sharp_model(seed)
    _, src, src_lengths = sources(seed)
    limits = torch.tensor([1, 2, 3, 4, 5, 6, 9, 12])

    def decode(**kwargs):
        if beam_size == 0:
            return greedy_search(model, src, src_lengths, limits, BOS, EOS, **kwargs)
        return beam_search(model, src, src_lengths, limits, BOS, EOS, beam_size, **kwargs)

    free = decode()
    assert decode(min_len=0) == free and decode(min_len=1) == free
    for hyp, limit in zip(decode(min_len=6), limits.tolist()):
        assert min(5, limit - 1) <= len(hyp) <= limit - 1


@pytest.mark.parametrize("beam_size", [0, 3], ids=["greedy", "beam3"])
def test_min_len_changes_outputs_that_would_end_early(sharp_model, sources, beam_size):
    """The tests above mean something only if min_len lengthens outputs that end early when free."""
    lengthened = 0
    for seed in SEEDS:
        model = sharp_model(seed)
        _, src, src_lengths = sources(seed)
        limits = torch.full_like(src_lengths, 8).cpu()
        free = _decode(model, src, src_lengths, limits, beam_size)
        if beam_size == 0:
            forced = greedy_search(model, src, src_lengths, limits, BOS, EOS, min_len=8)
        else:
            forced = beam_search(model, src, src_lengths, limits, BOS, EOS, beam_size, min_len=8)
        lengthened += sum(len(f) > len(h) for f, h in zip(forced, free))
    assert lengthened >= 5


@pytest.mark.parametrize("seed", SEEDS)
def test_beam_size_1_equals_greedy_under_min_len(sharp_model, sources, seed):
    model = sharp_model(seed)
    _, src, src_lengths = sources(seed)
    limits = max_lengths(src_lengths, 1.0, 4)
    for min_len in (3, 6):
        greedy = greedy_search(model, src, src_lengths, limits, BOS, EOS, min_len=min_len)
        assert beam_search(model, src, src_lengths, limits, BOS, EOS, 1, min_len=min_len) == greedy
        assert beam_search(model, src, src_lengths, limits, BOS, EOS, 1, in_flight=3, min_len=min_len) == greedy


@pytest.mark.parametrize("in_flight", [1, 3])
@pytest.mark.parametrize("seed", SEEDS)
def test_min_len_counts_from_each_sentences_own_start(sharp_model, sources, device, seed, in_flight):
    """In flight, sentences start at different steps: each decodes under min_len as it does alone."""
    model = sharp_model(seed)
    sentences, src, src_lengths = sources(seed)
    limits = max_lengths(src_lengths, 1.0, 5)
    batch = beam_search(model, src, src_lengths, limits, BOS, EOS, 3, in_flight=in_flight, min_len=4)
    for i, s in enumerate(sentences):
        assert beam_search(model, *_one(s, device), limits[i : i + 1], BOS, EOS, 3, min_len=4) == [batch[i]], i


@pytest.mark.parametrize("beam_size", [2, 5])
@pytest.mark.parametrize("seed", range(4))
def test_batched_beam_search_under_min_len_equals_the_plain_one(tiny_seq2seq, sources, device, monkeypatch, seed, beam_size):
    """The textbook search with EOS's log-probability -inf before step min_len finds the same hypotheses."""
    monkeypatch.setattr(s2s.search, "VOCAB_CHUNK", 3)
    model = _spread_weights(tiny_seq2seq(seed=seed)).to(device)
    sentences, src, src_lengths = sources(seed)
    limits = max_lengths(src_lengths, 2.0, 6)
    hyps = beam_search(model, src, src_lengths, limits, BOS, EOS, beam_size, alpha=2.0, min_len=5)
    for s, hyp, limit in zip(sentences, hyps, limits.tolist()):
        assert hyp == _plain_beam_search(model, s, limit, beam_size, alpha=2.0, min_len=5)


@pytest.mark.parametrize("in_flight", [0, 2, 3])
@pytest.mark.parametrize("seed", SEEDS)
def test_beam_hypotheses_scores_and_attention(sharp_model, sources, seed, in_flight):
    """Every finished hypothesis carries the log-probability teacher forcing gives it and the beam's normalised
    score; n_best's first is beam_search's answer; attention rows (one per token, EOS's left out) sum to 1 over
    the sentence's own source and are the same whatever else is in the batch (padding, sentences joining)."""
    from s2s.search import beam_hypotheses, n_best
    from s2s.tasks.translation import make_batch

    model = sharp_model(seed)
    sentences, src, src_lengths = sources(seed)
    limits = max_lengths(src_lengths, 1.0, 3)
    args = (model, src, src_lengths, limits, BOS, EOS, 4, 0.7, in_flight)
    plain = beam_hypotheses(*args)
    finished = beam_hypotheses(*args, attention=True)
    best = n_best(finished, 3)
    assert [hyps[0].tokens for hyps in best] == beam_search(*args)
    assert [[h.tokens for h in hyps] for hyps in plain] == [[h.tokens for h in hyps] for hyps in finished]
    for i, hyps in enumerate(best):
        assert 1 <= len(hyps) <= 3 and [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        (alone,) = beam_hypotheses(model, *_one(sentences[i], src.device), limits[i : i + 1], BOS, EOS, 4, 0.7, attention=True)
        for h, g in zip(finished[i], alone):
            assert h.tokens == g.tokens and torch.allclose(h.attention, g.attention, atol=1e-5)
        for h in hyps:
            assert h.score == pytest.approx(h.logprob / length_penalty(len(h.tokens) + 1, 0.7))
            assert h.attention.shape == (len(h.tokens), len(sentences[i]))
            assert torch.allclose(h.attention.sum(1), torch.ones(len(h.tokens)), atol=1e-5)
            batch = make_batch([sentences[i]], [h.tokens]).to(src.device)
            with torch.no_grad():
                logp = torch.log_softmax(model(batch).logits.float(), -1)[0]
            forced = logp.gather(1, batch.tgt_out[0].unsqueeze(1)).sum()
            assert float(forced) == pytest.approx(h.logprob, abs=1e-4)


@pytest.mark.parametrize("seed", range(8))
def test_fp32_decoding_on_packed_onednn_weights_gives_the_mkl_paths_outputs(tiny_seq2seq, sources, monkeypatch, seed):
    """Every fp32 decoding path gives the same translations (issue 23): the products on oneDNN packed weights (the
    default where torch runs AVX-512) and on MKL's sgemm (the default elsewhere), greedy and beam 5."""
    from s2s.nn import fast

    if not fast._PACKED_OPS:
        pytest.skip("this torch build has no oneDNN packed linear ops")
    model = _spread_weights(tiny_seq2seq(seed=seed))
    sentences, src, src_lengths = sources(seed)
    limits = max_lengths(src_lengths, 2.0, 6)
    outputs = []
    for packed in (False, True):
        monkeypatch.setattr(fast, "PACKED_FP32", packed)
        outputs.append((greedy_search(model, src, src_lengths, limits, BOS, EOS),
                        beam_search(model, src, src_lengths, limits, BOS, EOS, 5, alpha=1.0)))
    assert outputs[0] == outputs[1]
