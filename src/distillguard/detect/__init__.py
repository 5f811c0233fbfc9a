"""Detection: from canonical traffic to explained campaigns."""

from distillguard.detect.run import detect

__all__ = ["detect"]
