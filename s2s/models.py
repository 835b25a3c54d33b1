"""Models: the shared encoder plus one head each; `build_model` maps a config to constructors."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from s2s.chars import CASES, CharCNN
from s2s.config import Config
from s2s.crf import CRF, allowed_transitions, viterbi
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


class SequenceTagger(nn.Module):
    """N-vs-N tagging: char-CNN + casing features joined to the word embeddings in the shared
    Encoder, a linear layer to tag scores, and a CRF (or per-token softmax) on top
    (Lample et al. 2016; Ma & Hovy 2016)."""

    def __init__(
        self,
        encoder: Encoder,
        chars: CharCNN | None,
        case_dim: int,
        num_tags: int,
        crf: CRF | None,
        allowed: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,  # (trans, start, end) masks, crf.allowed_transitions
    ):
        super().__init__()
        self.encoder = encoder
        self.chars = chars
        self.case_embed = nn.Embedding(len(CASES), case_dim, padding_idx=0) if case_dim else None
        self.proj = nn.Linear(encoder.output_size, num_tags)
        self.crf = crf
        if crf is None:
            # Without a CRF, decoding is still constrained to valid spans: Viterbi over the
            # per-token log-probabilities with only the scheme's allowed transitions.
            if allowed is None:
                allowed = (torch.ones(num_tags, num_tags, dtype=torch.bool), torch.ones(num_tags, dtype=torch.bool), torch.ones(num_tags, dtype=torch.bool))
            trans, start, end = allowed
            self.register_buffer("trans_penalty", (~trans).float() * -1e4)
            self.register_buffer("start_penalty", (~start).float() * -1e4)
            self.register_buffer("end_penalty", (~end).float() * -1e4)

    def emissions(self, words: torch.Tensor, chars: torch.Tensor, cases: torch.Tensor, lengths: torch.Tensor):
        """Tag scores (B, T, K) and mask (B, T)."""
        features = []
        if self.chars is not None:
            features.append(self.chars(chars))  # (B, T, F)
        if self.case_embed is not None:
            features.append(self.case_embed(cases))  # (B, T, C)
        enc = self.encoder(words, lengths, torch.cat(features, dim=-1) if features else None)
        return self.proj(enc.states), enc.mask  # (B, T, K), (B, T)

    def forward(self, batch) -> Output:
        logits, mask = self.emissions(batch.words, batch.chars, batch.cases, batch.lengths)
        num_tokens = int(batch.num_tokens)
        if self.crf is not None:
            loss = self.crf.nll(logits, batch.tags, mask).sum()
        else:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), batch.tags.masked_fill(~mask, -100).flatten(), reduction="sum")
        return Output(loss / max(num_tokens, 1), logits, num_tokens)

    @torch.inference_mode()
    def decode(
        self, words: torch.Tensor, chars: torch.Tensor, cases: torch.Tensor, lengths: torch.Tensor, with_scores: bool = True
    ) -> tuple[list[list[int]], list[list[float]]]:
        """Best valid tag ids per sentence and each chosen tag's probability (CRF: its marginal)."""
        logits, mask = self.emissions(words, chars, cases, lengths)
        if self.crf is not None:
            paths = self.crf.decode(logits, mask)
            probs = self.crf.marginals(logits, mask) if with_scores else None
        else:
            logp = logits.float().log_softmax(-1)
            paths = viterbi(logp, mask, self.trans_penalty, self.start_penalty, self.end_penalty)
            probs = logp.exp() if with_scores else None
        if probs is None:
            return paths, [[1.0] * len(p) for p in paths]
        padded = torch.tensor([p + [0] * (logits.size(1) - len(p)) for p in paths], device=logits.device)
        picked = probs.gather(2, padded.unsqueeze(2)).squeeze(2).tolist()  # (B, T)
        return paths, [row[: len(p)] for row, p in zip(picked, paths)]


def build_model(
    config: Config, src_vocab_size: int, tgt_vocab_size: int, num_chars: int = 0, tags: list[str] | None = None
) -> nn.Module:
    """tagging: src_vocab_size = words, tgt_vocab_size = len(tags), plus the character vocabulary size and tag names."""
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
        case "tagging":
            chars = CharCNN(num_chars, m.char_emb_dim, m.char_filters, m.char_kernel, m.dropout) if m.char_filters else None
            feature_dim = (m.char_filters if chars is not None else 0) + m.case_dim
            encoder = Encoder(src_vocab_size, m.emb_dim, m.hidden_size, m.num_layers, m.cell, m.dropout, feature_dim=feature_dim)
            allowed = allowed_transitions(tags, m.tag_scheme) if tags is not None else None
            crf = CRF(tgt_vocab_size, allowed) if m.crf else None
            return SequenceTagger(encoder, chars, m.case_dim, tgt_vocab_size, crf, allowed)
        case _:
            raise ValueError(f"unknown task {config.task!r}")
