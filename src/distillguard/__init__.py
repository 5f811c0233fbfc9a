"""distillguard: find distillation campaigns in LLM-API traffic."""

__version__ = "0.1.0"
