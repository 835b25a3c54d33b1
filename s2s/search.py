"""Greedy and batched beam search, as free functions over a model interface:

    model.encode(src, lengths) -> memory     what every step attends to; memory.select(rows), memory.join(other)
    model.init_state(memory) -> state        state.select(rows), state.join(other)
    model.step(prev, state, memory) -> (logits (B, V), state, attention weights)
    model.vocab_size

Both decode a whole batch at once, stop each sentence at its own length limit
(so a sentence decodes the same alone or in any batch), and drop finished
sentences from the batch so that short outputs stop costing compute; beam search
can also keep a number of sentences in flight, starting the next as others finish, and
(beam_steps) take them from a caller while it runs, handing each back the step it ends.

Lengths count generated tokens including EOS, i.e. the decoder steps a sentence costs: a limit of L
allows at most L - 1 tokens before EOS, and min_len = L keeps EOS out of the first L - 1 steps. With
min_len equal to every limit, each sentence decodes exactly L steps (L - 1 tokens, then EOS), so that a
benchmark's sentences cost the same whatever the model would have said. OpenNMT-py counts neither BOS
nor EOS: its -min_length m (EOS not allowed before m tokens) is min_len = m + 1 here, and its
-max_length m stops after m steps without EOS; `-min_length L -max_length L` decodes L steps too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch.nn.functional import pad as nn_pad


def max_lengths(src_lengths: torch.Tensor, a: float, b: int) -> torch.Tensor:
    """Per-sentence output limit (tokens including EOS): a * source length + b."""
    return (src_lengths.float() * a).long() + b


@torch.no_grad()
def greedy_search(
    model: Any, src: torch.Tensor, src_lengths: torch.Tensor, max_lens: torch.Tensor, bos: int, eos: int,
    min_len: int = 0,
) -> list[list[int]]:
    """src (B, S) -> B token-id lists (without EOS), in batch order. EOS is not chosen before step
    min_len (so outputs have at least min_len - 1 tokens), unless a sentence's limit comes first."""
    memory = model.encode(src, src_lengths)
    state = model.init_state(memory)
    alive = torch.arange(src.size(0), device=src.device)  # batch rows still decoding
    prev = torch.full_like(alive, bos)
    limits = max_lens.to(src.device)
    steps: list[tuple[torch.Tensor, torch.Tensor]] = []  # (rows, tokens) per step
    t = 0
    while alive.numel():
        logits, state, _ = model.step(prev, state, memory)
        if t + 1 < min_len:  # too early to end; logits are this step's own tensor
            logits[:, eos] = float("-inf")
        tokens = logits.max(-1).indices  # (n,); the same first-maximum as argmax, and cheaper on a CPU
        tokens = torch.where(limits <= t + 1, torch.full_like(tokens, eos), tokens)
        steps.append((alive, tokens))
        keep = tokens != eos
        if not bool(keep.all()):
            index = keep.nonzero().squeeze(1)
            alive, tokens, limits = alive[index], tokens[index], limits[index]
            state, memory = state.select(index), memory.select(index)
        prev = tokens
        t += 1
    out: list[list[int]] = [[] for _ in range(src.size(0))]
    for rows, tokens in steps:
        for row, tok in zip(rows.tolist(), tokens.tolist()):
            if tok != eos:
                out[row].append(tok)
    return out


def in_flight_groups(order: list[int], batch_size: int, workers: int, per_group: int = 16) -> list[list[int]]:
    """What parallel workers decode with beam_search(..., in_flight=batch_size): `order` (sentence
    ids sorted by source length) cut into batches of batch_size, dealt round-robin to `workers`
    groups at a time, so that the groups decoded at once get similar mixes of lengths; a group
    holds at most per_group batches (its padded source tensor is made at once)."""
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    span = workers * per_group
    return [
        [i for batch in batches[start + w : start + span : workers] for i in batch]
        for start in range(0, len(batches), span)
        for w in range(min(workers, len(batches) - start))
    ]


def length_penalty(length: int, alpha: float) -> float:
    """GNMT length normalisation ((5 + |Y|) / 6) ** alpha (Wu et al. 2016, eq. 14)."""
    return ((5.0 + length) / 6.0) ** alpha


@dataclass
class Hypothesis:
    """One finished beam hypothesis."""

    tokens: list[int]  # without EOS
    logprob: float  # total log-probability of the tokens and EOS (what teacher forcing gives them)
    score: float  # logprob / length_penalty(len(tokens) + 1, alpha): what the beam ranks finished hypotheses by
    attention: torch.Tensor | None = None  # (len(tokens), source length) fp32, each token's weights; EOS's row left out


# Tokens per chunk in best_extensions (the fastest of 32, 64 and 128 in docs/speed.md).
VOCAB_CHUNK = 64
# beam_search with in_flight refills its batch when 1 / REFILL_FREE of it is free.
REFILL_FREE = 4


def best_extensions(
    logp: torch.Tensor, scores: torch.Tensor, k: int, chunk: int = VOCAB_CHUNK
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k best one-token extensions of each sentence's beams, exactly as a top-k over all of them.

    logp (n * width, V): next-token log-probabilities of each beam; scores (n, width): the beams'
    scores. Returns the extensions' scores, the beam each extends and its token, each (n, k).

    torch.topk over each beam's V tokens cost more than the output layer's matrix product on a CPU.
    Instead the vocabulary is cut into chunks of `chunk` tokens, and (beam score + the chunk's best
    log-probability) bounds every extension in that chunk. Each of the k best bounds is reached by an
    extension of its own, so the k best extensions all lie in the k chunks with the best bounds: the
    top-k runs over width * V / chunk bounds and then k * chunk candidates per sentence. Among equal
    scores the pick may differ from a full top-k's (which breaks ties arbitrarily too).
    """
    n, width = scores.shape
    V = logp.size(1)
    full = V - V % chunk
    bounds = [logp[:, :full].view(n * width, -1, chunk).amax(-1)] if full else []
    if full < V:  # the last, shorter chunk
        bounds.append(logp[:, full:].amax(-1, keepdim=True))
    bound = torch.cat(bounds, dim=1)  # (n*width, G)
    G = bound.size(1)
    bound = (bound + scores.view(-1, 1)).view(n, width * G)
    pair = bound.topk(min(k, width * G), dim=1).indices  # (n, p): beam * G + chunk
    beam = torch.div(pair, G, rounding_mode="floor")
    token = ((pair % G) * chunk).unsqueeze(2) + torch.arange(chunk, device=logp.device)  # (n, p, chunk)
    past_end = (token >= V).view(n, -1)  # the last chunk's padding
    flat = (beam.unsqueeze(2) * V + token.clamp(max=V - 1)).view(n, -1)  # index into a sentence's width * V
    cand = logp.view(n, width * V).gather(1, flat) + scores.gather(1, beam).repeat_interleave(chunk, dim=1)
    top_scores, index = cand.masked_fill_(past_end, float("-inf")).topk(k, dim=1)
    flat = flat.gather(1, index)
    return top_scores, torch.div(flat, V, rounding_mode="floor"), flat % V


def beam_search(
    model: Any,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    max_lens: torch.Tensor,
    bos: int,
    eos: int,
    beam_size: int,
    alpha: float = 1.0,
    in_flight: int = 0,
    min_len: int = 0,
) -> list[list[int]]:
    """Beam search over all sentences and beams at once (beam_size 1 gives greedy's output): each sentence's
    best finished hypothesis (see beam_hypotheses)."""
    finished = beam_hypotheses(model, src, src_lengths, max_lens, bos, eos, beam_size, alpha, in_flight, min_len)
    return [max(hyps, key=lambda h: h.score).tokens for hyps in finished]


def n_best(finished: list[list[Hypothesis]], n: int) -> list[list[Hypothesis]]:
    """The n best of each sentence's finished hypotheses, best first; the first is beam_search's answer (sorted is
    stable, so among equal scores the first finished comes first, as max picks it). A sentence whose best
    hypothesis ended early may have fewer than n."""
    return [sorted(hyps, key=lambda h: h.score, reverse=True)[:n] for hyps in finished]


# no_grad, not inference_mode: under bf16 autocast on a CPU, inference_mode made decoding slower
# (docs/speed.md).
@torch.no_grad()
def beam_hypotheses(
    model: Any,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    max_lens: torch.Tensor,
    bos: int,
    eos: int,
    beam_size: int,
    alpha: float = 1.0,
    in_flight: int = 0,
    min_len: int = 0,
    attention: bool = False,
) -> list[list[Hypothesis]]:
    """Beam search over all sentences and beams at once; every finished hypothesis of each sentence, in the
    order they finished, with attention weights when `attention` is set.

    A sentence is finished when its best-scoring candidate ends in EOS (or at its
    length limit); its answer is the finished hypothesis with the best
    length-normalised score. No hypothesis ends (EOS scores -inf) before its sentence's step min_len,
    unless the sentence's limit comes first.

    in_flight > 0 decodes at most that many sentences at a time and starts the next ones (in the
    order given) as others finish, so that the batch stays full instead of ending with the beams of
    a few long outputs, whose steps cost nearly as much as full ones (on a CPU a step's time goes
    to reading the weights). 0 starts every sentence at once.
    """
    total = src.size(0)
    started = 0  # sentences src[:started] have begun

    def source(room: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        nonlocal started
        if started == total:
            return None
        count = min(room, total - started)
        lengths = src_lengths[started : started + count]
        batch = src[started : started + count, : int(lengths.max())], lengths, max_lens[started : started + count]
        started += count
        return batch

    finished: list[list[Hypothesis]] = [[] for _ in range(total)]
    for _ in beam_steps(model, source, finished.__setitem__, bos, eos, beam_size, alpha, in_flight or total, min_len, attention):
        pass
    return finished


@torch.no_grad()
def beam_steps(model: Any, source: Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None],
               on_finished: Callable[[int, list[Hypothesis]], None], bos: int, eos: int, beam_size: int, alpha: float,
               in_flight: int, min_len: int = 0, attention: bool = False) -> Iterator[int]:
    """beam_hypotheses' search with its sentences fed in while it runs: yields after each decoder step the
    number of sentences that step decoded, and ends when none is in flight and `source` has none.

    source(room) gives the next sentences to start, at most `room`: (src (B, S), src_lengths (B,), max_lens (B,))
    on the model's device, or None when none is waiting. It is asked when the batch is empty (room == in_flight)
    or when 1 / REFILL_FREE of the in_flight sentences' places are free, so a server's source may wait for a
    sentence when room == in_flight. Sentences are numbered 0, 1, ... in the order the source gives them, and
    on_finished(number, hypotheses) gets each one's finished hypotheses (as beam_hypotheses) the step it ends.
    """
    K = beam_size
    # Rows are sentence-major, `width` per sentence; the encoder memory has one row per sentence,
    # shared by its beams in the attention. All K beams of a sentence start identical, so a first
    # step can run one row per sentence (width 1) and fan out to K beams; sentences that join a
    # running batch (and all, when the beam is wider than the vocabulary) start with K rows, all
    # but the first scored -inf.
    fan_out = model.vocab_size >= K
    n = started = t = 0  # sentences in flight and begun, the step
    found: dict[int, list[Hypothesis]] = {}  # the finished hypotheses of each sentence in flight
    source_len: dict[int, int] = {}  # with `attention`, each sentence's source length, to cut its weights to
    while True:
        # Refill when a quarter of the batch is free (or it is empty): each refill costs an encoder
        # call and copies of the decoding state.
        batch = source(in_flight - n) if n == 0 or in_flight - n >= max(1, in_flight // REFILL_FREE) else None
        if batch is not None:
            new_src, lengths, max_lens = batch
            count, device = new_src.size(0), new_src.device
            new_memory = model.encode(new_src, lengths)
            if n == 0:  # an empty batch (the first, or all finished) starts afresh, with one row per sentence if it may
                width, base = (1 if fan_out else K), t  # base: the step of history's first column
                alive = torch.empty(0, dtype=torch.long, device=device)  # sentence numbers decoding (n,)
                born = torch.empty_like(alive)  # the step each started at
                deadline = torch.empty_like(alive)  # the step by which each must have ended (its length limit)
                prev = torch.empty_like(alive)  # (n*width,) the tokens each row feeds in
                history = alive.new_zeros(0, 0)  # (n*width, t - base): the tokens of steps base..t-1
                # With `attention`, each row's attention weights of steps base..t-1 beside `history`: (n*width, t - base, S).
                attn = torch.empty(0, 0, 0, device=device) if attention else None
            new_state = model.init_state(new_memory)
            if width > 1:
                new_state = new_state.select(torch.arange(count, device=device).repeat_interleave(width))
            new_scores = torch.full((count, width), float("-inf"), device=device)
            new_scores[:, 0] = 0.0
            if n == 0:
                memory, state, scores = new_memory, new_state, new_scores
            else:
                memory, state, scores = memory.join(new_memory), state.join(new_state), torch.cat([scores, new_scores])
            ids = torch.arange(started, started + count, device=device)
            alive = torch.cat([alive, ids])
            born = torch.cat([born, torch.full_like(ids, t)])
            deadline = torch.cat([deadline, t + max_lens.to(device)])
            history = torch.cat([history, history.new_zeros(count * width, history.size(1))])
            if attn is not None:  # widened to the memory's (padded) source length
                S = memory.mask.size(1)
                attn = attn.new_zeros(0, attn.size(1), S) if n == 0 else nn_pad(attn, (0, S - attn.size(2)))
                attn = torch.cat([attn, attn.new_zeros(count * width, attn.size(1), S)])
                source_len.update(zip(range(started, started + count), lengths.tolist()))
            prev = torch.cat([prev, torch.full((count * width,), bos, dtype=torch.long, device=device)])
            started += count
            youngest = t  # the step the last sentences started at
            n = alive.numel()
        if n == 0:
            return
        logits, state, weights = model.step(prev, state, memory)  # weights (n*width, S)
        # log_softmax in fp32 is one fused pass (also over bf16 logits), faster than a cast then logsumexp.
        logp = torch.log_softmax(logits, dim=-1, dtype=torch.float32)  # (n*width, V)
        at_limit = deadline <= t + 1  # (n,)
        if t + 1 - youngest < min_len:  # some sentence may be too young to end
            early = (born > t + 1 - min_len) & ~at_limit  # (n,); at its limit EOS is all a sentence may take
            rows = early.repeat_interleave(width).nonzero().squeeze(1)
            logp[rows, eos] = float("-inf")
        if bool(at_limit.any()):  # only EOS may follow at the limit
            rows = at_limit.repeat_interleave(width).nonzero().squeeze(1)
            eos_logp = logp[rows, eos]
            logp.index_fill_(0, rows, float("-inf"))
            logp[rows, eos] = eos_logp
        top_scores, origin, tokens = best_extensions(logp, scores, K, VOCAB_CHUNK)  # (n, K) each
        rows = (torch.arange(n, device=device).unsqueeze(1) * width + origin).view(-1)  # (n*K,)
        history = torch.cat([history.index_select(0, rows), tokens.view(-1, 1)], dim=1)
        if attn is not None:  # the weights that chose each row's token at this step
            attn = torch.cat([attn.index_select(0, rows), weights.index_select(0, rows).float().unsqueeze(1)], dim=1)
        state, width = state.select(rows), K
        is_eos = tokens == eos
        if bool(is_eos.any()):
            for i, j in is_eos.nonzero().tolist():
                score = float(top_scores[i, j])
                if score > float("-inf"):
                    b = int(born[i])
                    hyp = history[i * K + j, b - base : -1].tolist()
                    sentence = int(alive[i])
                    weights_of = None if attn is None else attn[i * K + j, b - base : -1, : source_len[sentence]].cpu()
                    found.setdefault(sentence, []).append(Hypothesis(hyp, score, score / length_penalty(t + 1 - b, alpha), weights_of))
        scores = top_scores.masked_fill(is_eos, float("-inf"))
        done = is_eos[:, 0] | at_limit  # the best candidate ended, or no room is left
        if bool(done.any()):
            for sentence in alive[done].tolist():  # handed back the step it ends
                source_len.pop(sentence, None)
                on_finished(sentence, found.pop(sentence, []))
            keep = (~done).nonzero().squeeze(1)
            keep_rows = (keep.unsqueeze(1) * K + torch.arange(K, device=device)).view(-1)
            alive, born, deadline, scores = alive[keep], born[keep], deadline[keep], scores[keep]
            history, tokens = history.index_select(0, keep_rows), tokens[keep]
            if attn is not None:
                attn = attn.index_select(0, keep_rows)
            if alive.numel():  # forget the steps before the oldest live sentence began
                oldest = int(born.min())
                if attn is not None:
                    attn = attn[:, oldest - base :]
                history, base = history[:, oldest - base :], oldest
            state, memory = state.select(keep_rows), memory.select(keep)
        prev = tokens.reshape(-1)
        t += 1
        yield n
        n = alive.numel()
