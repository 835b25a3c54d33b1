"""The CRF against brute-force enumeration; padding invariance; forbidden transitions (the scheme's, from s2s.data.schemes)."""
from __future__ import annotations

import copy
import itertools

import torch

from s2s.data.schemes import allowed_transitions, check_tags
from s2s.nn.crf import CRF

TAGS = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]


def _allowed(tags: list[str], scheme: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The scheme's allowed transitions as the bool tensors CRF takes."""
    return tuple(torch.tensor(m, dtype=torch.bool) for m in allowed_transitions(tags, scheme))


def _random_crf(k: int, allowed=None, seed: int = 0) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(k, allowed)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    return crf


def _brute_force(crf: CRF, emissions: torch.Tensor) -> tuple[torch.Tensor, list[int], torch.Tensor]:
    """log Z, best path and marginals (T, K) of one sentence, emissions (T, K), by enumeration."""
    trans, start, end = crf.scores()
    t_len, k = emissions.shape
    paths = list(itertools.product(range(k), repeat=t_len))
    scores = torch.stack([
        start[p[0]] + end[p[-1]] + sum(emissions[i, p[i]] for i in range(t_len)) + sum(trans[p[i - 1], p[i]] for i in range(1, t_len))
        for p in paths
    ])
    probs = (scores - scores.logsumexp(0)).exp()
    marginals = torch.zeros(t_len, k)
    for p, prob in zip(paths, probs):
        marginals[torch.arange(t_len), torch.tensor(p)] += prob
    return scores.logsumexp(0), list(paths[int(scores.argmax())]), marginals


def test_forward_viterbi_and_marginals_equal_brute_force(device):
    k, t_len = 3, 4
    crf = _random_crf(k)
    emissions = torch.randn(2, t_len, k)
    mask = torch.ones(2, t_len, dtype=torch.bool)
    on_device = copy.deepcopy(crf).to(device)  # brute force on the CPU, the CRF on the test device
    log_z = on_device.log_partition(emissions.to(device), mask.to(device)).cpu()
    paths = on_device.decode(emissions.to(device), mask.to(device))
    marginals = on_device.marginals(emissions.to(device), mask.to(device)).cpu()
    for b in range(2):
        ref_z, ref_path, ref_marg = _brute_force(crf, emissions[b])
        assert torch.allclose(log_z[b], ref_z, atol=1e-5)
        assert paths[b] == ref_path
        assert torch.allclose(marginals[b], ref_marg, atol=1e-5)
    # The gold-path score is consistent with log Z: NLL of every path >= 0 and their probabilities sum to 1.
    all_paths = torch.tensor(list(itertools.product(range(k), repeat=t_len)))
    e = emissions[0].expand(len(all_paths), -1, -1)
    nll = on_device.nll(e.to(device), all_paths.to(device), torch.ones_like(all_paths, dtype=torch.bool).to(device)).cpu()
    assert (nll >= -1e-5).all() and torch.allclose((-nll).exp().sum(), torch.tensor(1.0), atol=1e-4)


def test_padding_changes_nothing(device):
    crf = _random_crf(len(TAGS), _allowed(TAGS, "bioes"), seed=1).to(device)
    lengths = [5, 2, 1, 4]
    emissions = torch.randn(len(lengths), 5, len(TAGS)).to(device)
    mask = (torch.arange(5)[None, :] < torch.tensor(lengths)[:, None]).to(device)
    tags = torch.randint(len(TAGS), (len(lengths), 5)).to(device)
    padded_junk = emissions.masked_fill(~mask.unsqueeze(2), 123.0)  # padding values must not leak in
    batch = (crf.log_partition(padded_junk, mask), crf.score(padded_junk, tags, mask), crf.decode(padded_junk, mask), crf.marginals(padded_junk, mask))
    for b, n in enumerate(lengths):
        e, m, t = emissions[b : b + 1, :n], mask[b : b + 1, :n], tags[b : b + 1, :n]
        assert torch.allclose(batch[0][b], crf.log_partition(e, m)[0], atol=1e-4)
        assert torch.allclose(batch[1][b], crf.score(e, t, m)[0], atol=1e-4)
        assert batch[2][b] == crf.decode(e, m)[0]
        assert torch.allclose(batch[3][b, :n], crf.marginals(e, m)[0], atol=1e-5)
        assert (batch[3][b, n:] == 0).all()


def test_forbidden_transitions_are_never_decoded(device):
    allowed = _allowed(TAGS, "bioes")
    assert not allowed[0][TAGS.index("O"), TAGS.index("I-PER")]
    assert not allowed[0][TAGS.index("B-PER"), TAGS.index("E-LOC")]
    assert allowed[0][TAGS.index("B-PER"), TAGS.index("E-PER")]
    assert not allowed[1][TAGS.index("E-LOC")] and not allowed[2][TAGS.index("B-LOC")]
    crf = _random_crf(len(TAGS), allowed, seed=2).to(device)
    torch.manual_seed(3)
    emissions = torch.randn(64, 7, len(TAGS)) * 5
    emissions[..., [TAGS.index("I-PER"), TAGS.index("E-LOC")]] += 8  # the best tokens alone would be invalid
    lengths = torch.randint(1, 8, (64,))
    mask = torch.arange(7)[None, :] < lengths[:, None]
    for path in crf.decode(emissions.to(device), mask.to(device)):
        assert check_tags([TAGS[i] for i in path], "bioes") is None


def test_k_best_lists_every_sequence_by_probability_as_brute_force_does(device):
    """k = every sequence: the list is brute force's, sorted, the first is Viterbi's and the probabilities sum to 1."""
    k, t_len = 3, 4
    crf = _random_crf(k, seed=4)
    torch.manual_seed(5)
    emissions = torch.randn(3, t_len, k)
    mask = torch.arange(t_len)[None, :] < torch.tensor([4, 2, 1])[:, None]  # padding changes nothing either
    on_device = copy.deepcopy(crf).to(device)
    found = on_device.k_best(emissions.to(device), mask.to(device), k ** t_len + 5)
    viterbi_paths = on_device.decode(emissions.to(device), mask.to(device))
    trans, start, end = crf.scores()
    for b, n in enumerate(mask.sum(1).tolist()):
        e = emissions[b, :n]
        all_paths = list(itertools.product(range(k), repeat=n))
        scores = torch.stack([start[p[0]] + end[p[-1]] + sum(e[i, p[i]] for i in range(n)) + sum(trans[p[i - 1], p[i]] for i in range(1, n))
                              for p in all_paths])
        probs = (scores - scores.logsumexp(0)).exp().tolist()
        assert len(found[b]) == len(all_paths)  # no more than there are
        assert found[b][0][0] == viterbi_paths[b]
        got = [p for _, p in found[b]]
        assert got == sorted(got, reverse=True) and abs(sum(got) - 1) < 1e-4
        reference = dict(zip(all_paths, probs))
        for path, p in found[b]:
            assert abs(reference[tuple(path)] - p) < 1e-5
        top = on_device.k_best(emissions[b : b + 1, :n].to(device), mask[b : b + 1, :n].to(device), 3)[0]
        assert [tuple(path) for path, _ in top] == [tuple(path) for path, _ in found[b][:3]]


def test_k_best_lists_only_valid_sequences(device):
    allowed = _allowed(TAGS, "bioes")
    crf = _random_crf(len(TAGS), allowed, seed=6).to(device)
    torch.manual_seed(7)
    emissions = torch.randn(8, 3, len(TAGS)) * 5
    mask = torch.ones(8, 3, dtype=torch.bool)
    for found in crf.k_best(emissions.to(device), mask.to(device), 200):
        for path, _ in found:
            assert check_tags([TAGS[i] for i in path], "bioes") is None
        # Every valid sequence of 3 tags over O and two types of BIOES: the list stops there, not at 200.
        valid = [p for p in itertools.product(range(len(TAGS)), repeat=3) if check_tags([TAGS[i] for i in p], "bioes") is None]
        assert len(found) == len(valid) and abs(sum(p for _, p in found) - 1) < 1e-3
