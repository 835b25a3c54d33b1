"""LSTM decoder with additive attention and input feeding.

Per step (Bahdanau et al. 2015 score; Luong et al. 2015 input feeding, eq. 5):
    s_t      = LSTM([emb(y_{t-1}); a_{t-1}], s_{t-1})
    c_t      = sum_j alpha_tj h_j,  alpha_t = softmax_j(v^T tanh(W s_t + U h_j))
    a_t      = tanh(W_c [s_t; c_t])                  the attentional vector, fed to the next step
    p(y_t)   = softmax(W_o a_t)
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from s2s.nn.attention import BahdanauAttention
from s2s.nn.encoder import EncoderOutput
from s2s.nn.fast import inference_linear, inference_lstm_cell, inference_tanh_


class DecoderState(NamedTuple):
    h: torch.Tensor  # (L, B, H)
    c: torch.Tensor  # (L, B, H)
    att: torch.Tensor  # (B, O) previous attentional vector (input feeding)

    def select(self, index: torch.Tensor) -> "DecoderState":
        """Rows `index` of the batch (beam reordering, dropping finished sentences)."""
        return DecoderState(self.h.index_select(1, index), self.c.index_select(1, index), self.att.index_select(0, index))

    def join(self, other: "DecoderState") -> "DecoderState":
        """This batch's rows, then other's."""
        return DecoderState(torch.cat([self.h, other.h], 1), torch.cat([self.c, other.c], 1), torch.cat([self.att, other.att]))


class Memory(NamedTuple):
    """What every decoding step attends to, made once per batch by `AttentionDecoder.memory`."""

    keys: torch.Tensor  # (B, S, A) the attention's projected keys
    states: torch.Tensor  # (B, S, D) encoder states, in the keys' dtype
    mask: torch.Tensor  # (B, S) bool, True = real token
    final: torch.Tensor  # (B, D) the encoder's final state

    def select(self, index: torch.Tensor) -> "Memory":
        """Rows `index` (dropping finished sentences)."""
        return Memory(*(x.index_select(0, index) for x in self))

    def join(self, other: "Memory") -> "Memory":
        """This batch's rows, then other's, padded to the longer source (zero keys and states, mask False)."""
        length = max(self.mask.size(1), other.mask.size(1))

        def cat(x: torch.Tensor, y: torch.Tensor, fill: float | bool = 0.0) -> torch.Tensor:  # along dim 0, padding dim 1
            grow = lambda z: nn.functional.pad(z, (0, 0) * (z.dim() - 2) + (0, length - z.size(1)), value=fill)  # noqa: E731
            return torch.cat([grow(x), grow(y)])

        return Memory(cat(self.keys, other.keys), cat(self.states, other.states), cat(self.mask, other.mask, False),
                      torch.cat([self.final, other.final]))


class AttentionDecoder(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        emb_dim: int,
        hidden_size: int,
        enc_size: int,
        attn_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        tie_embeddings: bool = False,
        pad_id: int = 0,
    ):
        super().__init__()
        # With tied embeddings the attentional vector lives in embedding space.
        self.out_size = emb_dim if tie_embeddings else hidden_size
        self.num_layers = num_layers
        self.embed = nn.Embedding(vocab_size, emb_dim, padding_idx=pad_id)
        self.rnn = nn.LSTM(
            emb_dim + self.out_size, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        self.attention = BahdanauAttention(enc_size, hidden_size, attn_size)
        self.bridge = nn.Linear(enc_size, hidden_size)  # encoder final state -> initial decoder state
        self.combine = nn.Linear(hidden_size + enc_size, self.out_size)
        self.output = nn.Linear(self.out_size, vocab_size)
        if tie_embeddings:
            self.output.weight = self.embed.weight
        self.dropout = nn.Dropout(dropout)

    def init_state(self, memory: Memory) -> DecoderState:
        h = torch.tanh(self.bridge(memory.final))  # (B, H)
        h = h.unsqueeze(0).repeat(self.num_layers, 1, 1).contiguous()  # (L, B, H)
        att = h.new_zeros(h.size(1), self.out_size)
        return DecoderState(h, torch.zeros_like(h), att)

    def memory(self, enc: EncoderOutput) -> Memory:
        """What every step attends to, made once per batch: the projected keys, and the encoder
        states in the keys' dtype (fp32 when decoding on a CPU under bf16 autocast, see
        BahdanauAttention.project_keys), so each step's attention runs in one dtype."""
        keys = self.attention.project_keys(enc.states)
        return Memory(keys, enc.states.to(keys.dtype), enc.mask, enc.final)

    def _lstm_step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step of the stacked self.rnn: x (B, I), h and c (L, B, H).

        Calls torch.lstm_cell on self.rnn's own weights: for a single step it runs about twice
        as fast on CPU as calling the nn.LSTM module (which sets up a whole-sequence kernel each time)."""
        hs, cs = [], []
        for layer in range(self.num_layers):
            if layer:  # nn.LSTM's dropout between stacked layers
                x = nn.functional.dropout(x, self.rnn.dropout, self.training)
            h_l, c_l = inference_lstm_cell(self.rnn, layer, x, (h[layer], c[layer]))  # torch.lstm_cell when training
            hs.append(h_l)
            cs.append(c_l)
            x = h_l
        return torch.stack(hs), torch.stack(cs)

    def _step(self, emb: torch.Tensor, state: DecoderState, memory: Memory) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        """emb (B, E) -> attentional vector (B, O), new state, attention weights (B, S)."""
        x = torch.cat([emb, state.att], dim=-1)  # (B, E + O)
        h, c = self._lstm_step(x, state.h, state.c)
        query = h[-1]  # (B, H)
        context, weights = self.attention(query, memory.keys, memory.states, memory.mask)  # (B, D), (B, S)
        # In query's dtype: under autocast `combine` casts its input to that dtype anyway, and a cat of
        # mixed dtypes (fp32 context when decoding on a CPU) would first write an fp32 copy.
        att = inference_tanh_(inference_linear(self.combine, torch.cat([query, context.to(query.dtype)], dim=-1)))  # (B, O)
        return att, DecoderState(h, c, att), weights

    def step(self, prev: torch.Tensor, state: DecoderState, memory: Memory) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        """One decoding step: prev (B,) token ids -> logits (B, V), new state, weights (B, S).

        memory may hold B / K rows, each shared by K consecutive decoder rows (beam search's beams of
        one sentence)."""
        att, state, weights = self._step(self.dropout(self.embed(prev)), state, memory)
        return inference_linear(self.output, self.dropout(att)), state, weights

    def forward(self, tgt_in: torch.Tensor, enc: EncoderOutput) -> torch.Tensor:
        """Teacher forcing: tgt_in (B, T) = BOS + target -> logits (B, T, V)."""
        memory = self.memory(enc)
        state = self.init_state(memory)
        embs = self.dropout(self.embed(tgt_in))  # (B, T, E)
        atts = []
        for t in range(tgt_in.size(1)):
            att, state, _ = self._step(embs[:, t], state, memory)
            atts.append(att)
        # One output projection for all steps: the largest matmul runs once, not T times.
        return self.output(self.dropout(torch.stack(atts, dim=1)))  # (B, T, V)
