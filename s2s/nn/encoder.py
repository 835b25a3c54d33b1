"""The shared encoder: token embeddings (or a projection of real-valued inputs) + a (bi)directional RNN.
Every head builds on this class."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class EncoderOutput(NamedTuple):
    states: torch.Tensor  # (B, T, D) top-layer states, D = hidden_size * directions; zero on padding
    mask: torch.Tensor  # (B, T) bool, True = real token
    final: torch.Tensor  # (B, D) top layer's last forward state joined with its first backward state


class ConvFrontEnd(nn.Module):
    """A 1-D convolution over the embedded tokens, ReLU, then max-pooling with stride `pool`:
    the RNN runs on ceil(T / pool) local n-gram features instead of T tokens (the CNN+RNN
    hybrid of the Keras IMDB examples; Zhou et al. 2015, C-LSTM). Padding never changes a result:
    inputs are zeroed past each length (what the conv's own zero padding would see), and the
    pooling windows see only real positions (outputs are >= 0 after ReLU, padding is set to 0)."""

    def __init__(self, in_dim: int, filters: int, kernel: int, pool: int):
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"conv kernel must be odd and positive, got {kernel}")
        if pool < 1:
            raise ValueError(f"conv pool must be at least 1, got {pool}")
        self.conv = nn.Conv1d(in_dim, filters, kernel, padding=kernel // 2)
        self.pool = pool

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, E), lengths (B,) -> (B, ceil(T / pool), filters) and the pooled lengths (B,)."""
        mask = torch.arange(x.size(1), device=x.device)[None, :] < lengths.to(x.device)[:, None]  # (B, T)
        x = x.masked_fill(~mask[:, :, None], 0.0)
        h = torch.relu(self.conv(x.transpose(1, 2)))  # (B, C, T)
        h = h.masked_fill(~mask[:, None, :], 0.0)
        if self.pool > 1:
            h = nn.functional.max_pool1d(h, self.pool, self.pool, ceil_mode=True)  # (B, C, ceil(T / pool))
        return h.transpose(1, 2), (lengths + self.pool - 1) // self.pool


class Encoder(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        emb_dim: int,
        hidden_size: int,
        num_layers: int = 1,
        cell: str = "lstm",
        dropout: float = 0.0,
        bidirectional: bool = True,
        pad_id: int = 0,
        feature_dim: int = 0,
        conv_filters: int = 0,
        conv_kernel: int = 5,
        conv_pool: int = 1,
        output_dropout: bool = True,
        input_size: int = 0,
    ):
        """feature_dim > 0 lets a head join extra per-token features (e.g. character
        features for tagging) to the word embeddings before the RNN. conv_filters > 0 puts a
        ConvFrontEnd between the embeddings and the RNN; with conv_pool > 1 the states, mask
        and lengths then cover ceil(T / conv_pool) steps, not T tokens. output_dropout=False returns
        the states without dropout, for a head that pools them first (dropout before a max would
        make training-time maxima larger than test-time ones). input_size > 0 reads real-valued
        inputs (B, T, input_size) through a Linear(input_size, emb_dim) in place of the token
        embedding (vocab_size is then unused): a time series' values or segments of them."""
        super().__init__()
        if input_size:
            self.project = nn.Linear(input_size, emb_dim)
        else:
            self.embed = nn.Embedding(vocab_size, emb_dim, padding_idx=pad_id)
        self.input_size = input_size
        self.dropout = nn.Dropout(dropout)
        self.conv = ConvFrontEnd(emb_dim + feature_dim, conv_filters, conv_kernel, conv_pool) if conv_filters else None
        self.rnn = CELLS[cell](
            conv_filters or emb_dim + feature_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.output_dropout = output_dropout
        self.num_directions = 2 if bidirectional else 1
        self.output_size = hidden_size * self.num_directions

    def forward(
        self, tokens: torch.Tensor, lengths: torch.Tensor, features: torch.Tensor | None = None
    ) -> EncoderOutput:
        """tokens (B, T) padded ids, or (B, T, input_size) floats with input_size > 0; lengths (B,) >= 1;
        features (B, T, F) or None."""
        x = self.project(tokens) if self.input_size else self.embed(tokens)  # (B, T, E)
        if features is not None:
            x = torch.cat([x, features], dim=-1)  # (B, T, E + F)
        x = self.dropout(x)
        if self.conv is not None:
            x, lengths = self.conv(x, lengths)  # (B, T', C), T' = ceil(T / conv_pool)
        steps = x.size(1)
        mask = torch.arange(steps, device=x.device)[None, :] < lengths.to(x.device)[:, None]
        if not (self.training or torch.is_grad_enabled()) and x.device.type == "cpu":
            states, final = self._unpacked(x, lengths.to(x.device), mask)
        else:
            # Packing makes padding cost nothing and keeps it out of the backward direction.
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, hidden = self.rnn(packed)
            states, _ = pad_packed_sequence(out, batch_first=True, total_length=steps)  # (B, T', D)
            h = hidden[0] if isinstance(hidden, tuple) else hidden  # (layers * dirs, B, H)
            final = torch.cat(list(h[-self.num_directions:]), dim=-1)  # (B, D)
        return EncoderOutput(self.dropout(states) if self.output_dropout else states, mask, final)

    def _unpacked(self, x: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference on CPU without packing, the same states as the packed path: a packed sequence takes
        torch's step-by-step CPU kernel, a padded one oneDNN's whole-sequence kernel (faster on
        long texts). Each direction runs alone; the backward one reads every sequence reversed within
        its length, so padding comes after the real tokens in both and never reaches them."""
        run = {nn.LSTM: torch.lstm, nn.GRU: torch.gru}.get(type(self.rnn), torch.rnn_tanh)
        steps, hidden = x.size(1), self.rnn.hidden_size
        position = torch.arange(steps, device=x.device)[None, :]
        reverse = torch.where(mask, lengths[:, None] - 1 - position, position)  # (B, T): its own inverse
        flip = lambda t: t.gather(1, reverse[:, :, None].expand_as(t))  # noqa: E731
        h0 = x.new_zeros(1, x.size(0), hidden)
        weights = self.rnn.all_weights  # per layer and direction
        for layer in range(self.rnn.num_layers):
            outs = []
            for d in range(self.num_directions):
                inp = x if d == 0 else flip(x)
                out = run(inp, (h0, h0) if run is torch.lstm else h0, weights[layer * self.num_directions + d], self.rnn.bias, 1, 0.0, False, False, True)[0]
                outs.append(out if d == 0 else flip(out))
            x = torch.cat(outs, dim=-1)  # (B, T, D): the next layer's input (eval mode: no dropout between layers)
        last = (lengths - 1)[:, None, None].expand(-1, 1, hidden)
        final = x[..., :hidden].gather(1, last).squeeze(1)  # forward direction's state at each last token
        if self.num_directions == 2:
            final = torch.cat([final, x[:, 0, hidden:]], dim=-1)  # backward direction's state at the first
        return x.masked_fill(~mask[:, :, None], 0.0), final
