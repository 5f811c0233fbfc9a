"""Measure findings against ground truth from the simulator."""

from distillguard.evaluate.report import evaluate, render

__all__ = ["evaluate", "render"]
