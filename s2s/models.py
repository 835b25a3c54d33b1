"""Models: the shared encoder plus one head each; `build_model` maps a config to constructors."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from s2s.config import Config
from s2s.decoder import AttentionDecoder
from s2s.encoder import Encoder


class Output(NamedTuple):
    loss: torch.Tensor  # mean loss per target token (what is optimised)
    logits: torch.Tensor
    num_tokens: int  # target tokens the loss averages over


class Seq2Seq(nn.Module):
    """N-vs-M translation: Encoder -> AttentionDecoder, trained with teacher forcing."""

    def __init__(self, encoder: Encoder, decoder: AttentionDecoder, label_smoothing: float = 0.0, pad_id: int = 0):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.label_smoothing = label_smoothing
        self.pad_id = pad_id

    def forward(self, batch) -> Output:
        enc = self.encoder(batch.src, batch.src_lengths)
        logits = self.decoder(batch.tgt_in, enc)  # (B, T, V)
        num_tokens = int(batch.num_tokens)
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(),
            batch.tgt_out.flatten(),
            ignore_index=self.pad_id,
            label_smoothing=self.label_smoothing,
            reduction="sum",
        )
        return Output(loss / max(num_tokens, 1), logits, num_tokens)


def build_model(config: Config, src_vocab_size: int, tgt_vocab_size: int) -> nn.Module:
    m = config.model
    match config.task:
        case "translation":
            encoder = Encoder(src_vocab_size, m.emb_dim, m.hidden_size, m.num_layers, m.cell, m.dropout)
            decoder = AttentionDecoder(
                tgt_vocab_size,
                m.emb_dim,
                m.dec_hidden_size,
                encoder.output_size,
                m.attn_size,
                m.dec_layers,
                m.dropout,
                m.tie_embeddings,
            )
            return Seq2Seq(encoder, decoder, config.train.label_smoothing)
        case _:
            raise ValueError(f"unknown task {config.task!r}")
