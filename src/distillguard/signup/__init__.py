"""Sign-up risk: score new accounts from sign-up data alone, before their first exchange."""

from distillguard.ingest.accounts import read_accounts
from distillguard.signup.risk import TIERS, signup_risk

__all__ = ["TIERS", "read_accounts", "signup_risk"]
