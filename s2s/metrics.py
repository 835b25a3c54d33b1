"""Thin wrappers over the reference scorers. Scores are on detokenized text."""
from __future__ import annotations

from sacrebleu.metrics import BLEU, CHRF


def bleu_chrf(hyps: list[str], refs: list[str]) -> dict:
    """Corpus BLEU (cased, 13a) and chrF with their sacreBLEU signatures."""
    bleu, chrf = BLEU(), CHRF()
    b, c = bleu.corpus_score(hyps, [refs]), chrf.corpus_score(hyps, [refs])
    return {
        "bleu": round(b.score, 2),
        "chrf": round(c.score, 2),
        "bleu_line": b.format(signature=str(bleu.get_signature())),
        "chrf_line": c.format(signature=str(chrf.get_signature())),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }
