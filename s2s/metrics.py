"""Every scorer: detokenized sacreBLEU/chrF, exact entity-span P/R/F1, accuracy/macro-F1/confusion.
Scores are percentages."""
from __future__ import annotations

from sacrebleu.metrics import BLEU, CHRF

Span = tuple[int, int, str]  # (start, end, type), end exclusive


def bleu_chrf(hyps: list[str], refs: list[str]) -> dict:
    """Corpus BLEU (cased, 13a) and chrF of detokenized text, with their sacreBLEU signatures."""
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


def span_scores(gold: list[list[Span]], pred: list[list[Span]]) -> dict:
    """Entity precision, recall and F1 (percent), per type and micro-averaged, on exact
    (start, end, type) matches: what conlleval reports (Tjong Kim Sang & De Meulder 2003)."""
    counts: dict[str, list[int]] = {}  # type -> [correct, predicted, gold]
    for g, p in zip(gold, pred, strict=True):
        gs, ps = set(g), set(p)
        for _, _, kind in gs:
            counts.setdefault(kind, [0, 0, 0])[2] += 1
        for span in ps:
            c = counts.setdefault(span[2], [0, 0, 0])
            c[1] += 1
            c[0] += span in gs

    def prf(correct: int, predicted: int, gold_: int) -> dict:
        p = 100.0 * correct / predicted if predicted else 0.0
        r = 100.0 * correct / gold_ if gold_ else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        return {"precision": p, "recall": r, "f1": f, "correct": correct, "predicted": predicted, "gold": gold_}

    total = [sum(c[i] for c in counts.values()) for i in range(3)]
    return {"micro": prf(*total), "types": {k: prf(*counts[k]) for k in sorted(counts)}}


def accuracy_scores(gold: list[int], pred: list[int], labels: list[str]) -> dict:
    """Accuracy, macro-F1 (over the labels that occur in gold or predictions, as scikit-learn does),
    per-label precision/recall/F1 and the confusion matrix (rows gold, columns predicted), in %."""
    k = len(labels)
    confusion = [[0] * k for _ in range(k)]
    for g, p in zip(gold, pred):
        confusion[g][p] += 1
    per_label, f1s = {}, []
    for i, label in enumerate(labels):
        tp = confusion[i][i]
        predicted = sum(confusion[j][i] for j in range(k))
        support = sum(confusion[i])
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[label] = {"precision": 100 * precision, "recall": 100 * recall, "f1": 100 * f1, "support": support}
        if predicted or support:
            f1s.append(f1)
    n = len(gold)
    return {
        "accuracy": 100 * sum(confusion[i][i] for i in range(k)) / n if n else 0.0,
        "macro_f1": 100 * sum(f1s) / len(f1s) if f1s else 0.0,
        "examples": n,
        "labels": list(labels),
        "confusion": confusion,
        "per_label": per_label,
    }
