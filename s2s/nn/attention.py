"""Additive attention (Bahdanau, Cho & Bengio 2015, section 3.1 and appendix A.1.2)."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from s2s.nn.fast import inference_linear, inference_tanh_


class BahdanauAttention(nn.Module):
    """score(q, k_j) = v^T tanh(W_q q + U_k k_j)   (Bahdanau et al. 2015, eq. 6 / A.1.2).

    The keys term U_k k_j does not depend on the decoder step, so callers project the
    keys once per batch with `project_keys` and pass the result to every step.
    """

    def __init__(self, key_size: int, query_size: int, attn_size: int):
        super().__init__()
        self.key_proj = nn.Linear(key_size, attn_size, bias=False)
        self.query_proj = nn.Linear(query_size, attn_size, bias=False)
        self.energy = nn.Linear(attn_size, 1, bias=False)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """(B, S, K) -> (B, S, A). When decoding on a CPU the result is fp32 even under bf16
        autocast: bf16 elementwise ops there convert to fp32 and back, so the per-step add and tanh
        over (B, S, A) run faster on fp32 keys. Training keeps the autocast dtype (fp32 keys made bf16
        training slower and its memory larger), and so does a GPU."""
        proj = self.key_proj(keys)
        return proj.float() if proj.device.type == "cpu" and not torch.is_grad_enabled() else proj

    def forward(
        self, query: torch.Tensor, proj_keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B * K, Q): K queries per memory row, in row order (a sentence's K beams share its
        encoder output, so beam search does not copy it per beam); proj_keys (B, S, A); values (B, S, V);
        mask (B, S) bool, True = real. Returns context (B * K, V) and weights (B * K, S), exactly 0 on padding."""
        B, S, A = proj_keys.shape
        q = inference_linear(self.query_proj, query).to(proj_keys.dtype).view(B, -1, 1, A)  # (B, K, 1, A)
        hidden = inference_tanh_(q + proj_keys.unsqueeze(1))  # (B, K, S, A); in place: one (B, K, S, A) buffer, not two
        # On fp32 keys under autocast (decoding on a CPU) the rest stays fp32 too: autocast would copy
        # `hidden` to bf16 for two tiny products whose oneDNN kernels are compiled anew for every
        # (B, S) shape, most of a first decoding pass's compiles (values: see
        # AttentionDecoder.memory).
        keep_fp32 = hidden.dtype == torch.float32 and torch.is_autocast_enabled(hidden.device.type)
        with torch.autocast(hidden.device.type, enabled=False) if keep_fp32 else contextlib.nullcontext():
            scores = self.energy(hidden).squeeze(3)  # (B, K, S)
            scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
            weights = torch.softmax(scores, dim=-1)  # (B, K, S); exp(-inf) = 0 on padding
            context = torch.bmm(weights.to(values.dtype), values)  # (B, K, V)
        return context.flatten(0, 1), weights.flatten(0, 1)
