"""The scorers (s2s.metrics): entity span scores (exact matches only, equal to seqeval's strict IOB2 scores) and
classification scores (accuracy, macro-F1, per-label P/R/F1, confusion matrix)."""
from __future__ import annotations

import random

import pytest
from conftest import check_against_seqeval

from s2s.data.schemes import to_tags
from s2s.metrics import accuracy_scores, span_scores


def test_span_scores_count_exact_matches_only():
    gold = [[(0, 2, "PER"), (3, 4, "LOC")], [(1, 2, "ORG")]]
    pred = [[(0, 1, "PER"), (3, 4, "LOC")], [(1, 2, "LOC")]]
    s = span_scores(gold, pred)
    assert (s["micro"]["correct"], s["micro"]["predicted"], s["micro"]["gold"]) == (1, 3, 3)
    assert s["types"]["LOC"]["precision"] == 50.0 and s["types"]["PER"]["recall"] == 0.0
    assert s["types"]["ORG"]["f1"] == 0.0 and s["micro"]["f1"] == pytest.approx(100 / 3)


def test_span_f1_equals_seqeval_on_random_tags():
    rng = random.Random(0)
    kinds = ["PER", "LOC", "ORG"]

    def random_spans(n: int) -> list:
        out, i = [], 0
        while i < n:
            if rng.random() < 0.4:
                end = min(n, i + rng.randint(1, 3))
                out.append((i, end, rng.choice(kinds)))
                i = end
            else:
                i += 1
        return out

    gold, pred = [], []
    for _ in range(200):
        n = rng.randint(1, 9)
        g = random_spans(n)
        p = [s for s in g if rng.random() < 0.7] + [s for s in random_spans(n) if rng.random() < 0.3]
        p = sorted({s[0]: s for s in sorted(p)}.values())
        p = [s for j, s in enumerate(p) if j == 0 or s[0] >= p[j - 1][1]]  # no overlaps
        gold.append((g, n))
        pred.append(p)
    ours = span_scores([g for g, _ in gold], pred)
    check_against_seqeval([to_tags(g, n, "iob2") for g, n in gold], [to_tags(p, n, "iob2") for p, (_, n) in zip(pred, gold)], ours)


def test_scores_by_hand():
    # gold a a b b c, predicted a b b b a: per label (P, R, F1): a (1/2, 1/2, 1/2), b (2/3, 1, 4/5), c (0, 0, 0)
    found = accuracy_scores([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"])
    assert found["accuracy"] == pytest.approx(60.0)
    assert found["macro_f1"] == pytest.approx(100 * (0.5 + 0.8 + 0.0) / 3)
    assert found["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert found["per_label"]["b"]["precision"] == pytest.approx(200 / 3) and found["per_label"]["c"]["support"] == 1
    # A label that is neither gold nor predicted does not count in the macro average (as in scikit-learn).
    assert accuracy_scores([0, 1], [0, 1], ["a", "b", "c"])["macro_f1"] == pytest.approx(100.0)


def test_scores_agree_with_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    for k in (2, 3, 5):
        gold = [rng.randrange(k) for _ in range(40)]
        pred = [g if rng.random() < 0.6 else rng.randrange(k) for g in gold]
        found = accuracy_scores(gold, pred, [f"l{i}" for i in range(k)])
        assert found["accuracy"] == pytest.approx(100 * metrics.accuracy_score(gold, pred))
        assert found["macro_f1"] == pytest.approx(100 * metrics.f1_score(gold, pred, average="macro"))
        assert found["confusion"] == metrics.confusion_matrix(gold, pred, labels=list(range(k))).tolist()
        p, r, f, support = metrics.precision_recall_fscore_support(gold, pred, labels=list(range(k)), zero_division=0)
        for i in range(k):
            label = found["per_label"][f"l{i}"]
            assert (label["precision"], label["recall"], label["f1"]) == pytest.approx((100 * p[i], 100 * r[i], 100 * f[i]))
            assert label["support"] == support[i]
