"""The proving ground's traffic: labelled legitimate populations and campaigns."""

from distillguard.simulate.run import Facts, simulate
from distillguard.simulate.scenario import Scenario, ScenarioError, load

__all__ = ["Facts", "Scenario", "ScenarioError", "load", "simulate"]
