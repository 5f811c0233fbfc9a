"""The flagging threshold for a target false-positive rate, estimated from the traffic.

Linkage finds many groups; nearly all of them are legitimate (a company's accounts, a
campus, an enterprise app's end users, people who share an office network). Their
scores form the null distribution. We fit it robustly on the logit scale (median and
median absolute deviation, so the few campaign groups do not move it) and put the
threshold where a normal tail leaves `fpr` of legitimate groups above it. A campaign's
confidence is how far into that tail it sits.

With too few groups to fit, the default threshold stands and the summary says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist, median

DEFAULT_THRESHOLD = 0.5
FLOOR, CEILING = 0.15, 0.9  # never flag what looks like ordinary traffic, never flag nothing
MIN_GROUPS = 20  # fewer linked groups than this cannot describe the null
MIN_SCALE = 0.25  # logit units: a null with almost no spread is not trusted to be that tight


@dataclass(frozen=True)
class Calibration:
    threshold: float
    fpr: float
    groups: int
    null_median: float | None = None
    null_scale: float | None = None

    def confidence(self, score: float) -> float:
        """How far a group's score sits above the null: the null's cumulative
        probability at it (0.5 at the null's median, near 1 far in its tail)."""
        if self.null_median is None or self.null_scale is None:
            return score
        return NormalDist().cdf((_logit(score) - self.null_median) / self.null_scale)

    def describe(self) -> str:
        if self.null_median is None:
            return (
                f"default threshold {self.threshold:.3f}: {self.groups} linked groups are "
                f"too few to estimate a false-positive rate of {self.fpr:g}"
            )
        return (
            f"threshold {self.threshold:.3f} for a false-positive rate of {self.fpr:g}, "
            f"from {self.groups} linked groups (null median score "
            f"{_sigmoid(self.null_median):.3f})"
        )


def calibrate(scores: list[float], fpr: float) -> Calibration:
    """The threshold above which a legitimate group's score falls with probability
    `fpr`, from the scores of all linked groups."""
    if not 0 < fpr < 1:
        raise ValueError("the false-positive rate must lie strictly between 0 and 1")
    if len(scores) < MIN_GROUPS:
        return Calibration(DEFAULT_THRESHOLD, fpr, len(scores))
    logits = [_logit(s) for s in scores]
    centre = median(logits)
    scale = max(MIN_SCALE, 1.4826 * median(abs(v - centre) for v in logits))
    tail = -NormalDist().inv_cdf(fpr)  # not inv_cdf(1 - fpr): 1 - 1e-17 is 1.0
    cut = _sigmoid(centre + tail * scale)
    return Calibration(min(CEILING, max(FLOOR, cut)), fpr, len(scores), centre, scale)


def _logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))
