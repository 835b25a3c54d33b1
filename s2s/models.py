"""Models: the shared encoder plus one head each; `build_model` maps a config to constructors."""
from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from s2s.chars import CASES, CharCNN
from s2s.config import Config
from s2s.crf import CRF, allowed_transitions, viterbi
from s2s.decoder import AttentionDecoder
from s2s.encoder import Encoder
from s2s.errors import S2SError


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


class TagDecoding:
    """Decoding shared by SequenceTagger and TaggerEnsemble: needs `emissions(batch)`, `crf` and,
    without a CRF, the penalty buffers of the scheme's forbidden transitions."""

    @torch.inference_mode()
    def decode(self, batch, with_scores: bool = True) -> tuple[list[list[int]], list[list[float]]]:
        """Best valid tag ids per sentence of a tagging.TagBatch and each chosen tag's probability (CRF: its marginal)."""
        logits, mask = self.emissions(batch)
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


class NeighbourWordLM(nn.Module):
    """A tagger's language-modelling side objective (Rei 2017, "Semi-supervised multitask learning for
    sequence labeling"): from its forward-direction state each token predicts the next word, from its
    backward-direction state the previous one, through a small tanh layer, among a shortlist of frequent
    training words (class 0: any other word). It makes the encoder learn how words follow each other in
    the training text, not only what separates the tags; it costs a small softmax per token in training
    and nothing when tagging."""

    def __init__(self, hidden_size: int, vocab_size: int, bottleneck: int = 50):
        super().__init__()
        self.hidden_size = hidden_size
        self.next = nn.Sequential(nn.Linear(hidden_size, bottleneck), nn.Tanh(), nn.Linear(bottleneck, vocab_size))
        self.prev = nn.Sequential(nn.Linear(hidden_size, bottleneck), nn.Tanh(), nn.Linear(bottleneck, vocab_size))

    def logits(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-word scores from the forward halves and previous-word scores from the backward halves
        of states (R, T, 2H): each (R, T, V)."""
        h = self.hidden_size
        return self.next(states[..., :h]), self.prev(states[..., h:])

    def forward(self, states: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """Summed cross-entropy of both directions; words (R, T): each token's shortlist class, -100 on padding."""
        next_logits, prev_logits = self.logits(states)
        next_words = words[:, 1:]
        # A padding position's backward state (zeros) must not learn to predict the last real word.
        prev_words = words[:, :-1].masked_fill(words[:, 1:] < 0, -100)
        loss = F.cross_entropy(next_logits[:, :-1].flatten(0, 1).float(), next_words.flatten(), ignore_index=-100, reduction="sum")
        return loss + F.cross_entropy(prev_logits[:, 1:].flatten(0, 1).float(), prev_words.flatten(), ignore_index=-100, reduction="sum")


class SequenceTagger(TagDecoding, nn.Module):
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
        same_word_pooling: bool = False,
        lm: NeighbourWordLM | None = None,
        lm_weight: float = 0.0,
    ):
        super().__init__()
        self.encoder = encoder
        self.lm, self.lm_weight = lm, lm_weight
        self.chars = chars
        self.case_embed = nn.Embedding(len(CASES), case_dim, padding_idx=0) if case_dim else None
        self.same_word_pooling = same_word_pooling
        self.proj = nn.Linear(encoder.output_size * (2 if same_word_pooling else 1), num_tags)
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

    def emissions(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Tag scores (S, L, K) and mask (S, L) of a batch's sentences (a tagging.TagBatch): the encoder
        reads the batch's runs of text (R, T), and each sentence takes its tokens' states from its run."""
        return self.tag_scores(self.encode(batch), batch)

    def encode(self, batch) -> torch.Tensor:
        """Encoder states (R, T, D) of the batch's runs."""
        features = []
        if self.chars is not None:
            features.append(self.chars(batch.chars))  # (R, T, F)
        if self.case_embed is not None:
            features.append(self.case_embed(batch.cases))  # (R, T, C)
        return self.encoder(batch.words, batch.lengths, torch.cat(features, dim=-1) if features else None).states

    def tag_scores(self, states: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.same_word_pooling:
            states = torch.cat([states, self.pool_same_words(states, batch.word_keys)], dim=-1)
        logits = self.proj(states).flatten(0, 1)[batch.positions]  # (S, L, K)
        mask = torch.arange(logits.size(1), device=logits.device) < batch.sentence_lengths.unsqueeze(1)
        return logits, mask

    @staticmethod
    def pool_same_words(states: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Each token's mean state over the other occurrences of its word in the same run (zeros if none):
        a name that is clear in one sentence ("brewer Zywiec") informs its bare mentions elsewhere in the
        document. keys (R, T): one id per normalised word of the batch, 0 on padding."""
        same = (keys.unsqueeze(2) == keys.unsqueeze(1)) & (keys != 0).unsqueeze(2)  # (R, T, T)
        same &= ~torch.eye(keys.size(1), dtype=torch.bool, device=keys.device)
        counts = same.sum(2, keepdim=True).clamp(min=1)
        return torch.bmm(same.to(states.dtype), states) / counts

    def forward(self, batch) -> Output:
        states = self.encode(batch)
        logits, mask = self.tag_scores(states, batch)
        num_tokens = int(batch.num_tokens)
        if self.crf is not None:
            loss = self.crf.nll(logits, batch.tags, mask).sum()
        else:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), batch.tags.masked_fill(~mask, -100).flatten(), reduction="sum")
        if self.lm is not None and batch.lm_words is not None:
            loss = loss + self.lm_weight * self.lm(states, batch.lm_words)
        return Output(loss / max(num_tokens, 1), logits, num_tokens)


class TaggerEnsemble(TagDecoding, nn.Module):
    """Several taggers of one vocabulary and tag set decoded as one: the mean of their tag scores and of
    their CRF transition scores (typically +1 F1 over a single member on CoNLL-2003, see README)."""

    def __init__(self, members: list[SequenceTagger]):
        super().__init__()
        self.members = nn.ModuleList(members)
        first = members[0]
        self.crf = copy.deepcopy(first.crf)  # with its forbidden-transition masks; the scores become the mean
        if self.crf is not None:
            with torch.no_grad():
                for name in ("trans", "start", "end"):
                    getattr(self.crf, name).copy_(torch.stack([getattr(m.crf, name) for m in members]).mean(0))
        else:
            for name in ("trans_penalty", "start_penalty", "end_penalty"):
                self.register_buffer(name, getattr(first, name).clone())

    def emissions(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        scores = [m.emissions(batch) for m in self.members]
        return torch.stack([logits for logits, _ in scores]).mean(0), scores[0][1]


POOLINGS = ("mean", "max", "last", "attention")


class AttentionPooling(nn.Module):
    """A learned weighted average of the states: score_t = v . tanh(W h_t), weights = softmax over
    the real positions (Yang et al. 2016, sec. 2.2, with one learned query; Lin et al. 2017)."""

    def __init__(self, input_size: int, attn_size: int):
        super().__init__()
        self.proj = nn.Linear(input_size, attn_size)
        self.v = nn.Linear(attn_size, 1, bias=False)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """states (B, T, D), mask (B, T) -> (B, D)."""
        scores = self.v(torch.tanh(self.proj(states))).squeeze(-1)  # (B, T)
        weights = scores.float().masked_fill(~mask, -torch.inf).softmax(-1).to(states.dtype)  # (B, T), 0 on padding
        return torch.bmm(weights.unsqueeze(1), states).squeeze(1)  # (B, D)


class TextClassifier(nn.Module):
    """N-vs-1 classification: the shared Encoder, its states pooled into one vector per text
    (any of mean, max, last state, attention, concatenated in the order given) and a small
    classifier. Dropout comes after pooling, not before: the encoder returns its states undropped
    (output_dropout=False), since dropout before a max makes training-time maxima larger than
    test-time ones (Kim 2014 also drops after pooling)."""

    def __init__(self, encoder: Encoder, num_classes: int, pooling: tuple[str, ...], head_hidden: int = 0,
                 attn_size: int = 128, dropout: float = 0.0, label_smoothing: float = 0.0):
        super().__init__()
        unknown = [p for p in pooling if p not in POOLINGS]
        if not pooling or unknown:
            raise ValueError(f"pooling must be one or more of {', '.join(POOLINGS)}, got {pooling}")
        self.encoder = encoder
        self.num_classes = num_classes
        self.pooling = tuple(pooling)
        size = encoder.output_size
        self.attention = AttentionPooling(size, attn_size) if "attention" in pooling else None
        self.dropout = nn.Dropout(dropout)
        pooled = size * len(pooling)
        if head_hidden:
            self.head = nn.Sequential(nn.Linear(pooled, head_hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(head_hidden, num_classes))
        else:
            self.head = nn.Linear(pooled, num_classes)
        self.label_smoothing = label_smoothing

    def pool(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """tokens (B, T), lengths (B,) -> pooled features (B, len(pooling) * D)."""
        enc = self.encoder(tokens, lengths)
        states, mask = enc.states, enc.mask  # (B, T', D), (B, T'); states are 0 on padding
        parts = []
        for mode in self.pooling:
            match mode:
                case "mean":
                    parts.append(states.sum(1) / mask.sum(1, keepdim=True).to(states.dtype))  # (B, D)
                case "max":
                    parts.append(states.masked_fill(~mask.unsqueeze(-1), -torch.inf).amax(1))  # (B, D)
                case "last":
                    parts.append(enc.final)  # (B, D): last forward state + first backward state
                case "attention":
                    parts.append(self.attention(states, mask))  # (B, D)
        return torch.cat(parts, dim=-1)

    def logits(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pool(tokens, lengths)))  # (B, K)

    def forward(self, batch) -> Output:
        logits = self.logits(batch.tokens, batch.lengths)
        loss = F.cross_entropy(logits.float(), batch.labels, label_smoothing=self.label_smoothing)
        return Output(loss, logits, int(batch.labels.numel()))


def build_model(
    config: Config, src_vocab_size: int, tgt_vocab_size: int, num_chars: int = 0, tags: list[str] | None = None
) -> nn.Module:
    """tagging: src_vocab_size = words, tgt_vocab_size = len(tags), plus the character vocabulary size and tag names.
    classification: src_vocab_size = words, tgt_vocab_size = number of classes."""
    m = config.model
    if m.conv_filters and (m.conv_kernel < 1 or m.conv_kernel % 2 == 0 or m.conv_pool < 1):
        raise S2SError(f"model.conv_kernel must be odd and positive and model.conv_pool at least 1, got {m.conv_kernel} and {m.conv_pool}")
    conv = {"conv_filters": m.conv_filters, "conv_kernel": m.conv_kernel, "conv_pool": m.conv_pool}
    match config.task:
        case "translation":
            encoder = Encoder(src_vocab_size, m.emb_dim, m.hidden_size, m.num_layers, m.cell, m.dropout, m.bidirectional, **conv)
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
            # Tags are per token: a pooling front end would change the sequence length.
            encoder = Encoder(src_vocab_size, m.emb_dim, m.hidden_size, m.num_layers, m.cell, m.dropout, m.bidirectional,
                              feature_dim=feature_dim, **(conv | {"conv_pool": 1}))
            allowed = allowed_transitions(tags, m.tag_scheme) if tags is not None else None
            crf = CRF(tgt_vocab_size, allowed) if m.crf else None
            lm = None
            if m.lm_vocab:
                # Deeper layers see both directions, so a forward state there has seen the next word.
                if m.num_layers != 1 or not m.bidirectional:
                    raise S2SError(f"model.lm_vocab needs a one-layer bidirectional encoder (model.num_layers is {m.num_layers}, model.bidirectional {m.bidirectional})")
                if m.lm_vocab < 2:
                    raise S2SError(f"model.lm_vocab must be 0 (off) or at least 2, got {m.lm_vocab}")
                lm = NeighbourWordLM(m.hidden_size, m.lm_vocab)
            return SequenceTagger(encoder, chars, m.case_dim, tgt_vocab_size, crf, allowed, m.same_word_pooling, lm, m.lm_weight)
        case "classification":
            encoder = Encoder(src_vocab_size, m.emb_dim, m.hidden_size, m.num_layers, m.cell, m.dropout, m.bidirectional,
                              output_dropout=False, **conv)
            pooling = tuple(m.pooling.split("+"))
            return TextClassifier(encoder, tgt_vocab_size, pooling, m.head_hidden, m.attn_size, m.dropout, config.train.label_smoothing)
        case _:
            raise ValueError(f"unknown task {config.task!r}")
