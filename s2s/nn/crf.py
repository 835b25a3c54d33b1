"""Linear-chain CRF (Lafferty et al. 2001; Lample et al. 2016, sec. 2.2) and constrained Viterbi.

Scores of a tag sequence y for emissions E (B, T, K):
    s(y) = start[y_1] + sum_t E[t, y_t] + sum_t trans[y_{t-1}, y_t] + end[y_T]
Transitions the tag scheme forbids (e.g. O -> I-PER in BIOES) get a large negative
constant on top of the learned score, so they are never decoded and carry ~0 probability.
Everything is batched: the forward algorithm and Viterbi loop over time only.
"""
from __future__ import annotations

import math

import torch
from torch import nn

FORBIDDEN = -1e4  # added to forbidden transitions; finite so that logsumexp never sees all -inf
# (trans (K, K), start (K,), end (K,)): what may follow what, begin and end a sequence; True = allowed.
Allowed = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def register_penalties(module: nn.Module, num_tags: int, allowed: Allowed | None) -> None:
    """Buffers trans_penalty, start_penalty, end_penalty: FORBIDDEN where `allowed` is False, else 0.
    Buffers, not parameters: saved with the model, never learned."""
    if allowed is None:
        allowed = (torch.ones(num_tags, num_tags, dtype=torch.bool), torch.ones(num_tags, dtype=torch.bool), torch.ones(num_tags, dtype=torch.bool))
    for name, mask in zip(("trans_penalty", "start_penalty", "end_penalty"), allowed):
        module.register_buffer(name, (~torch.as_tensor(mask, dtype=torch.bool)).float() * FORBIDDEN)


class CRF(nn.Module):
    def __init__(self, num_tags: int, allowed: Allowed | None = None):
        super().__init__()
        self.trans = nn.Parameter(torch.zeros(num_tags, num_tags))  # trans[i, j]: score of tag i -> tag j
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))
        register_penalties(self, num_tags, allowed)

    def scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.trans + self.trans_penalty, self.start + self.start_penalty, self.end + self.end_penalty

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log Z per sentence (B,) by the forward algorithm; emissions (B, T, K), mask (B, T) with mask[:, 0] True."""
        trans, start, end = self.scores()
        alpha = start + emissions[:, 0]  # (B, K)
        for t in range(1, emissions.size(1)):
            # alpha_t[j] = logsumexp_i(alpha_{t-1}[i] + trans[i, j]) + E[t, j]
            nxt = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + emissions[:, t]  # (B, K)
            alpha = torch.where(mask[:, t, None], nxt, alpha)  # padding carries alpha through unchanged
        return torch.logsumexp(alpha + end, dim=1)

    def score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """s(y) per sentence (B,) for gold tags (B, T) (any value on padding)."""
        trans, start, end = self.scores()
        tags = tags.masked_fill(~mask, 0)
        emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T)
        step = trans[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
        lengths = mask.sum(1)
        last = tags.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)  # (B,)
        return (
            start[tags[:, 0]]
            + (emit * mask).sum(1)
            + (step * mask[:, 1:]).sum(1)
            + end[last]
        )

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood per sentence (B,)."""
        emissions = emissions.float()
        return self.log_partition(emissions, mask) - self.score(emissions, tags, mask)

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """p(y_t = k | x) (B, T, K) by forward-backward; 0 on padding."""
        trans, start, end = self.scores()
        emissions = emissions.float()
        b, t_len, _ = emissions.shape
        # Same recursions as log_partition, but each logsumexp over (B, K, K) is done as a
        # (B, K) @ (K, K) product in exp space, shifted by the row maximum for stability: faster.
        exp_trans = trans.exp()  # forbidden transitions -> exactly 0

        def lse_matmul(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:  # log(exp(x) @ m), x (B, K)
            top = x.max(dim=1, keepdim=True).values
            return ((x - top).exp() @ m).clamp_min(1e-30).log() + top

        alphas = [start + emissions[:, 0]]
        for t in range(1, t_len):
            nxt = lse_matmul(alphas[-1], exp_trans) + emissions[:, t]
            alphas.append(torch.where(mask[:, t, None], nxt, alphas[-1]))
        # beta_t[i] = logsumexp_j(trans[i, j] + E[t+1, j] + beta_{t+1}[j]); beta_last = end
        betas = [end.expand(b, -1)]
        exp_trans_t = exp_trans.t()
        for t in range(t_len - 2, -1, -1):
            nxt = lse_matmul(emissions[:, t + 1] + betas[-1], exp_trans_t)
            # Past a sentence's end the step is the identity: beta stays `end` until the last real token.
            betas.append(torch.where(mask[:, t + 1, None], nxt, betas[-1]))
        betas.reverse()
        alpha, beta = torch.stack(alphas, 1), torch.stack(betas, 1)  # (B, T, K)
        log_z = torch.logsumexp(alphas[-1] + end, dim=1)  # (B,)
        return (alpha + beta - log_z[:, None, None]).exp() * mask.unsqueeze(2)

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        return viterbi(emissions, mask, *self.scores())

    def k_best(self, emissions: torch.Tensor, mask: torch.Tensor, k: int) -> list[list[tuple[list[int], float]]]:
        """The k most probable valid tag sequences per sentence, each with p(y | x) = exp(s(y) - log Z), best first."""
        emissions = emissions.float()
        penalties = (self.trans_penalty, self.start_penalty, self.end_penalty)
        # Forbidden transitions become -inf: such a sequence is never listed, rather than listed with p ~ 0.
        trans, start, end = (s.masked_fill(p < 0, -torch.inf) for s, p in zip(self.scores(), penalties))
        log_z = self.log_partition(emissions, mask).tolist()
        return [[(path, math.exp(score - z)) for path, score in found]
                for found, z in zip(k_best(emissions, mask, trans, start, end, k), log_z)]


def viterbi(
    emissions: torch.Tensor, mask: torch.Tensor, trans: torch.Tensor, start: torch.Tensor, end: torch.Tensor
) -> list[list[int]]:
    """Best tag sequence per sentence, vectorised over the batch; emissions (B, T, K), mask (B, T)."""
    emissions = emissions.float()
    b, t_len, k = emissions.shape
    score = start + emissions[:, 0]  # (B, K)
    backpointers = []
    identity = torch.arange(k, device=emissions.device).expand(b, k)
    for t in range(1, t_len):
        best, idx = (score.unsqueeze(2) + trans).max(dim=1)  # (B, K): best previous tag for each tag
        score = torch.where(mask[:, t, None], best + emissions[:, t], score)
        # On padding the pointer is the identity, so backtracking passes through unchanged.
        backpointers.append(torch.where(mask[:, t, None], idx, identity))
    last = (score + end).argmax(dim=1)  # (B,)
    path = [last]
    for bp in reversed(backpointers):
        last = bp.gather(1, last.unsqueeze(1)).squeeze(1)
        path.append(last)
    path.reverse()
    tags = torch.stack(path, dim=1).tolist()  # (B, T)
    lengths = mask.sum(1).tolist()
    return [row[:n] for row, n in zip(tags, lengths)]


def k_best(
    emissions: torch.Tensor, mask: torch.Tensor, trans: torch.Tensor, start: torch.Tensor, end: torch.Tensor, k: int
) -> list[list[tuple[list[int], float]]]:
    """The k best tag sequences per sentence with their scores s(y), best first; emissions (B, T, K), mask (B, T).
    Viterbi keeping the k best partial paths into each tag instead of one (the list Viterbi algorithm, Seshadri &
    Sundberg 1994). Sequences through a -inf transition are left out, so a sentence may get fewer than k."""
    emissions = emissions.float()
    b, t_len, n = emissions.shape
    score = emissions.new_full((b, n, k), -torch.inf)  # (B, K, k): the k best paths ending in each tag
    score[:, :, 0] = start + emissions[:, 0]
    # A pointer is (previous tag) * k + (its rank); on padding the identity, so backtracking passes through.
    identity = torch.arange(n * k, device=emissions.device).view(1, n, k).expand(b, n, k)
    pointers = []
    for t in range(1, t_len):
        paths = (score.unsqueeze(3) + trans.unsqueeze(1)).flatten(1, 2)  # (B, K * k, K): every path extended by every tag
        best, idx = paths.topk(k, dim=1)  # (B, k, K)
        keep = mask[:, t, None, None]
        score = torch.where(keep, best.transpose(1, 2) + emissions[:, t].unsqueeze(2), score)
        pointers.append(torch.where(keep, idx.transpose(1, 2), identity))
    final, last = (score + end.unsqueeze(1)).flatten(1).topk(k, dim=1)  # (B, k): tag * k + rank
    path = [last // k]
    for bp in reversed(pointers):
        last = bp.flatten(1).gather(1, last)
        path.append(last // k)
    path.reverse()
    tags = torch.stack(path, dim=2).tolist()  # (B, k, T)
    lengths, final = mask.sum(1).tolist(), final.tolist()
    return [[(row[:length], s) for row, s in zip(rows, scores) if s != -math.inf]
            for rows, scores, length in zip(tags, final, lengths)]
