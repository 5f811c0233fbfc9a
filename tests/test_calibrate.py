"""The threshold for a target false-positive rate, and the campaign score's structure."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from distillguard.campaigns import score as scoring
from distillguard.campaigns.calibrate import (
    CEILING,
    DEFAULT_THRESHOLD,
    FLOOR,
    MIN_GROUPS,
    calibrate,
)


def _null(n: int, seed: int = 1) -> list[float]:
    """Scores of legitimate groups: logits normal around -3 with spread 0.5."""
    r = random.Random(seed)
    return [1 / (1 + 2.718281828 ** -r.gauss(-3.0, 0.5)) for _ in range(n)]


def test_the_threshold_leaves_the_asked_share_of_the_null_above_it() -> None:
    scores = _null(20_000)
    cal = calibrate(scores, 0.01)
    above = sum(s >= cal.threshold for s in _null(20_000, seed=2)) / 20_000
    assert 0.005 <= above <= 0.02
    assert cal.groups == 20_000


def test_a_few_campaign_groups_do_not_move_the_threshold() -> None:
    clean = calibrate(_null(2_000), 0.001)
    contaminated = calibrate(_null(2_000) + [0.99] * 40, 0.001)
    assert abs(clean.threshold - contaminated.threshold) < 0.01
    assert contaminated.confidence(0.99) > 0.999
    assert contaminated.confidence(0.05) < 0.6


def test_too_few_groups_keep_the_default_and_say_so() -> None:
    cal = calibrate([0.1] * (MIN_GROUPS - 1), 0.001)
    assert cal.threshold == DEFAULT_THRESHOLD
    assert "too few" in cal.describe()


def test_a_rate_outside_zero_and_one_is_refused() -> None:
    for bad in (0.0, 1.0, -0.1, 2.0):
        with pytest.raises(ValueError):
            calibrate(_null(100), bad)


@given(
    st.lists(st.floats(0.0, 1.0), min_size=MIN_GROUPS, max_size=200),
    st.floats(1e-300, 0.2),  # --fpr 1e-300 is a strict rate, not an error
    st.floats(1e-300, 0.2),
)
def test_a_lower_rate_never_lowers_the_threshold(scores: list[float], a: float, b: float) -> None:
    low, high = sorted((a, b))
    strict, loose = calibrate(scores, low), calibrate(scores, high)
    assert strict.threshold >= loose.threshold
    assert FLOOR <= loose.threshold <= CEILING


def _values(**given: float) -> dict[str, float]:
    return {k: given.get(k, 0.0) for k in scoring.INDICATORS}


def test_harvest_without_coordination_is_not_a_campaign() -> None:
    """A research lab of three scripting benchmark runs with chain of thought."""
    lab = _values(
        reasoning_elicitation=1.0, reasoning_effort=0.9, scripted_clients=1.0, single_capability=1
    )
    assert scoring.score(lab, 3) < 0.1


def test_coordination_lets_a_hidden_harvest_count() -> None:
    """A farm on its own templates that hides most of its chain-of-thought asks."""
    farm = _values(private_templates=0.8, token_ceiling=1.0, single_capability=0.9)
    quieter = _values(private_templates=0.8)
    assert scoring.score(farm, 40) > scoring.score(quieter, 40) > scoring.score(_values(), 40)
    assert scoring.score(farm, 40) > 0.2


@given(st.dictionaries(st.sampled_from(list(scoring.INDICATORS)), st.floats(0, 1)))
def test_more_of_any_indicator_never_lowers_the_score(given_values: dict[str, float]) -> None:
    values = _values(**given_values)
    base = scoring.score(values, 10)
    for key in scoring.INDICATORS:
        raised = dict(values, **{key: min(1.0, values[key] + 0.3)})
        assert scoring.score(raised, 10) >= base - 1e-12


def test_a_substream_does_not_inherit_its_resellers_scripted_client() -> None:
    """End users of a reseller reach us through its server, whose client is a script."""
    base = {k: 0.0 for k in ("cot_share", "capability_concentration", "max_tokens_ceiling_share")}
    base |= {"hour_entropy": 0.5, "interarrival_cv": None, "exchanges": 5, "reasoning_share": 0}
    account = {**base, "account_id": "acct-1", "scripted_agent_share": 1.0}
    substream = {**base, "account_id": "acct-1\x1fuser-9", "scripted_agent_share": 1.0}
    signals = scoring.member_signals(pa.Table.from_pylist([account, substream]))
    assert scoring.indicators(signals, np.array([0]))["scripted_clients"] == 1.0
    assert scoring.indicators(signals, np.array([1]))["scripted_clients"] == 0.0


def _profiles(**columns: list) -> pa.Table:
    n = len(next(iter(columns.values())))
    base = {
        "account_id": [f"acct-{i}" for i in range(n)],
        "exchanges": [20] * n,
        "cot_share": [0.0] * n,
        "scripted_agent_share": [0.0] * n,
        "hour_entropy": [0.5] * n,
        "interarrival_cv": [1.0] * n,
        "capability_concentration": [0.0] * n,
        "max_tokens_ceiling_share": [0.0] * n,
        "reasoning_share": [0.0] * n,
    }
    return pa.table(base | columns)


def test_member_signals_read_missing_values_as_absent_evidence() -> None:
    """No timing, no sign-up date, no share: the member shows nothing, it is not an error."""
    table = _profiles(
        exchanges=[20, 20, 5, 20],
        interarrival_cv=[0.2, None, 0.2, 0.9],
        cot_share=[1.0, None, 0.5, 0.0],
        hour_entropy=[0.95, 0.9, None, 1.0],
        seconds_signup_to_first_use=[3600.0, None, 30 * 86400.0, 6 * 86400.0],
    )
    signals = scoring.member_signals(table)
    assert signals["machine_regularity"].tolist() == [1.0, 0.0, 0.0, 0.0]  # 5 exchanges: too few
    assert signals["reasoning_elicitation"].tolist() == [1.0, 0.0, 0.5, 0.0]
    assert signals["around_the_clock"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert signals["fresh_accounts"].tolist() == [1.0, 0.0, 0.0, 1.0]
    no_signup = scoring.member_signals(table.drop_columns(["seconds_signup_to_first_use"]))
    assert no_signup["fresh_accounts"].tolist() == [0.0] * 4
    assert scoring.indicators(signals)["reasoning_elicitation"] == pytest.approx(1.5 / 4)
    assert scoring.indicators(signals, np.array([], dtype=np.int64))["around_the_clock"] == 0.0


@given(st.lists(st.tuples(st.integers(-1, 4), st.floats(0, 1)), min_size=1, max_size=60))
def test_every_groups_indicators_at_once_equal_each_groups_alone(
    rows: list[tuple[int, float]],
) -> None:
    labels = np.array([label for label, _ in rows])
    table = _profiles(cot_share=[share for _, share in rows])
    signals = scoring.member_signals(table)
    means = scoring.group_indicators(signals, labels, 6)  # group 5 has no members
    assert all(values[5] == 0.0 for values in means.values())
    for group in range(6):
        alone = scoring.indicators(signals, np.flatnonzero(labels == group))
        for key, values in means.items():
            assert values[group] == pytest.approx(alone[key], abs=1e-12)
