"""Stage 2 of the pipeline: features of each exchange's content."""

from distillguard.features.content import FEATURES, featurise

__all__ = ["FEATURES", "featurise"]
