"""Detection metrics as plain functions over labels and predictions.

Kept free of I/O so that each can be checked on small hand-built cases whose answers
are known (tests/test_evaluate.py).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from math import comb


@dataclass(frozen=True)
class Confusion:
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def fpr(self) -> float:
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else 0.0


def confusion(truth: Sequence[bool], flagged: Sequence[bool]) -> Confusion:
    pairs = Counter(zip(truth, flagged, strict=True))
    return Confusion(
        pairs[(True, True)], pairs[(False, True)], pairs[(True, False)], pairs[(False, False)]
    )


def average_precision(truth: Sequence[bool], scores: Sequence[float]) -> float:
    """Area under the precision-recall curve (step-wise, ties ranked together)."""
    positives = sum(truth)
    if positives == 0:
        return 0.0
    by_score: dict[float, list[bool]] = defaultdict(list)
    for t, s in zip(truth, scores, strict=True):
        by_score[s].append(t)
    area, tp, seen = 0.0, 0, 0
    for score in sorted(by_score, reverse=True):
        group = by_score[score]
        tp_before = tp
        tp += sum(group)
        seen += len(group)
        area += (tp - tp_before) / positives * (tp / seen)
    return area


def adjusted_rand_index(truth: Sequence[Hashable], predicted: Sequence[Hashable]) -> float:
    """Agreement of two partitions, corrected for chance (1 = identical, ~0 = random)."""
    n = len(truth)
    if n < 2:
        return 1.0
    pairs = sum(comb(c, 2) for c in Counter(zip(truth, predicted, strict=True)).values())
    rows = sum(comb(c, 2) for c in Counter(truth).values())
    cols = sum(comb(c, 2) for c in Counter(predicted).values())
    expected = rows * cols / comb(n, 2)
    maximum = (rows + cols) / 2
    if maximum == expected:
        return 1.0
    return (pairs - expected) / (maximum - expected)


def partition_labels(campaign_of: Sequence[str | None], prefix: str) -> list[str]:
    """Cluster labels where every account outside a campaign is a cluster of its own."""
    return [c if c is not None else f"{prefix}{i}" for i, c in enumerate(campaign_of)]


@dataclass(frozen=True)
class Match:
    """How one true campaign was recovered."""

    campaign: str
    accounts: int
    best: str | None  # the predicted campaign holding most of its accounts
    overlap: int
    purity: float  # share of the best predicted campaign that is this campaign
    completeness: float  # share of this campaign inside the best predicted campaign
    fragments: int  # predicted campaigns its flagged accounts are spread over


def match_campaigns(truth: Sequence[str | None], predicted: Sequence[str | None]) -> list[Match]:
    sizes_true = Counter(t for t in truth if t is not None)
    sizes_pred = Counter(p for p in predicted if p is not None)
    overlap = Counter(
        (t, p) for t, p in zip(truth, predicted, strict=True) if t is not None and p is not None
    )
    out = []
    for campaign, size in sorted(sizes_true.items()):
        candidates = {p: n for (t, p), n in overlap.items() if t == campaign}
        if not candidates:
            out.append(Match(campaign, size, None, 0, 0.0, 0.0, 0))
            continue
        best = max(sorted(candidates), key=lambda p: candidates[p])
        n = candidates[best]
        out.append(Match(campaign, size, best, n, n / sizes_pred[best], n / size, len(candidates)))
    return out


def time_to_detect(
    campaign_start: float, cutoffs: Sequence[tuple[float, float]], share: float = 0.5
) -> float | None:
    """Time from a campaign's start to the first cut-off at which `share` of its accounts
    were flagged; `cutoffs` holds (cut-off time, flagged share), in any order."""
    for cutoff, flagged in sorted(cutoffs):
        if flagged >= share and cutoff >= campaign_start:
            return cutoff - campaign_start
    return None
