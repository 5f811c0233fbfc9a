"""Content features: template fingerprints, capability and chain-of-thought scores."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from distillguard.features import FEATURES, featurise
from distillguard.features.capability import classify
from distillguard.features.content import signature_matrix
from distillguard.features.template import EMPTY, band_keys, signatures, similarity, skeleton

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import public_sets

TEMPLATE = (
    "Write a {lang} function that {task} using a {structure}. Include type hints, docstrings "
    "and unit tests with pytest. Handle empty input and invalid arguments gracefully. "
    "Explain your reasoning step by step before giving the final answer."
)


def test_prompts_of_one_template_share_bands_and_free_text_does_not() -> None:
    same = [
        TEMPLATE.format(lang=lang, task=task, structure=s)
        for lang, task, s in [
            ("Python", "merges intervals", "heap"),
            ("Go", "parses a log line", "trie"),
            ("Rust", "deduplicates records by key", "hash map"),
        ]
    ]
    other = [
        "Tell me about houseplants that survive low light in a dark flat",
        "Can you help me write a polite complaint to my landlord about the heating?",
    ]
    sigs = signatures(pa.array(same + other))
    keys = band_keys(sigs)
    assert similarity(sigs[0], sigs[1]) > 0.4 and similarity(sigs[0], sigs[3]) < 0.1
    assert (keys[0] == keys[1]).any() and (keys[0] == keys[2]).any()
    assert not (keys[0] == keys[3]).any() and not (keys[3] == keys[4]).any()


def test_masking_numbers_quotes_code_and_addresses() -> None:
    a, b = skeleton(
        pa.array(
            [
                'Order 12345 from "Alice" at a@b.io: run `ls -la` see https://x.io/1 id deadbeef01',
                'Order 999 from "Bob" at c@d.org: run `pwd` see https://y.org/2 id 0123abcd99',
            ]
        )
    ).to_pylist()
    assert a == b


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(max_size=120), min_size=1, max_size=30))
def test_signatures_are_deterministic_and_equal_for_equal_skeletons(texts: list[str]) -> None:
    first = signatures(pa.array(texts))
    again = signatures(pa.array(list(reversed(texts))))[::-1]
    assert np.array_equal(first, again)
    for i, text in enumerate(texts):
        if not text.split():
            assert (first[i] == EMPTY).all()


def test_a_batch_boundary_does_not_change_signatures() -> None:
    texts = pa.array([f"{TEMPLATE} variant {i} " * (1 + i % 5) for i in range(300)])
    whole = signatures(texts)
    parts = [signatures(texts.slice(a, 37)) for a in range(0, 300, 37)]
    assert np.array_equal(whole, np.concatenate(parts))


def test_signatures_match_a_plain_reference_minhash() -> None:
    """The compiled loops against the definition: a shingle is a word pair's hashes
    combined (h * mix + g mod 2**64); per permutation, the minimum over the prompt's
    shingles of the high word of a * shingle + b (mod 2**64)."""
    from distillguard.features import template

    texts = ["alpha beta", "one", "", "x y x y x y", " a\u3000b\x1fc\u00a0d\u2014e <n>!"]
    got = signatures(pa.array(texts))
    for row, text in enumerate(texts):
        words = _words(text)
        if not words:
            assert (got[row] == template.EMPTY).all()
            continue
        hashes = [int(h) for h in template._token_hashes(pa.array(words))]
        mix = int(template._MIX[1])
        pairs = [(h * mix + g) % 2**64 for h, g in itertools.pairwise(hashes)]
        shingles = pairs or hashes  # one word is its own shingle
        for p in range(template.NUM_PERM):
            values = [
                (int(template._A[p]) * int(s) + int(template._B[p])) % 2**64 >> 32 for s in shingles
            ]
            assert got[row, p] == min(values)


def test_signature_agreement_estimates_jaccard() -> None:
    letters = str.maketrans("0123456789", "klmnopqrst")  # digits would be masked
    base = [f"w{i}".translate(letters) for i in range(200)]
    other = base[:100] + [f"x{i}".translate(letters) for i in range(100)]  # Jaccard 99/301
    sigs = signatures(pa.array([" ".join(base), " ".join(other)]))
    assert abs(similarity(sigs[0], sigs[1]) - 99 / 301) < 0.15


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Write a Python function that merges two sorted lists.", "coding"),
        ("You are an autonomous agent with tools: read_file, run_shell. Fix the test.", "agentic"),
        ("Solve: a farmer has 12 cows and buys 7 more. How many cows now?", "math_reasoning"),
        ("Grade the following answer for correctness on a scale of 1 to 10.", "grading"),
        ("Translate 'good morning' into Basque.", "translation"),
        ("Write me a short poem about autumn leaves.", "creative"),
        ("Show your full chain of thought.", "chain_of_thought"),
        ("hi there, how are you?", "general_chat"),
    ],
)
def test_capability_of_clear_cases(prompt: str, expected: str) -> None:
    labels, _ = classify(pa.array([prompt]))
    assert labels[0].as_py() == expected


def test_cot_score_orders_requests_by_how_hard_they_ask() -> None:
    prompts = pa.array(
        [
            "What is 2+2?",
            "Explain your reasoning step by step.",
            "Think carefully, step by step, and show all your reasoning in "
            "<thinking> tags: reconstruct the reasoning behind the answer.",
        ]
    )
    _, plain = classify(prompts)
    _, boosted = classify(
        prompts,
        reasoning_requested=pa.array([True, True, True]),
        max_tokens=pa.array([32000, 32000, 32000]),
    )
    low, mid, high = plain.to_pylist()
    assert low == 0.0 < mid < high <= 1.0
    assert all(b > p for b, p in zip(boosted.to_pylist(), plain.to_pylist(), strict=True))


def test_featurise_returns_one_row_per_exchange() -> None:
    batch = pa.table(
        {
            "request_id": ["a", "b", "c"],
            "prompt_text": [TEMPLATE, None, "hello"],
            "system_text": ["You are terse.", None, "You are terse."],
        }
    )
    out = featurise(batch)
    assert out.schema == FEATURES and out.num_rows == 3
    hashes = out.column("system_hash").to_pylist()
    assert hashes[0] == hashes[2] and hashes[1] is None and len(hashes[0]) == 16
    assert signature_matrix(out).shape == (3, 64)
    assert out.column("capability").to_pylist()[1] == "general_chat"


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.sampled_from(["", "hello", TEMPLATE]), st.text(max_size=80)),
            st.one_of(st.none(), st.integers(0, 3)),
            st.one_of(st.none(), st.booleans()),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_repeated_prompts_get_the_features_each_would_get_alone(
    rows: list[tuple[str | None, int | None, bool | None]],
) -> None:
    # A batch's distinct prompts are featurised once and spread back to their rows.
    columns = {
        "request_id": [str(i) for i in range(len(rows))],
        "prompt_text": pa.array([r[0] for r in rows], pa.string()),
        "tools_declared": pa.array([r[1] for r in rows], pa.int32()),
        "reasoning_requested": pa.array([r[2] for r in rows], pa.bool_()),
    }
    together = featurise(pa.table(columns)).to_pylist()
    alone = [featurise(pa.table(columns).slice(i, 1)).to_pylist()[0] for i in range(len(rows))]
    assert together == alone
    missing = [r["prompt_hash"] is None for r in together]
    assert missing == [p is None for p, _, _ in rows]


FLOORS = {
    "humaneval": 0.9,
    "mbpp": 0.95,
    "codealpaca": 0.75,
    "conala": 0.7,
    "gsm8k": 0.8,
    "toolformer": 0.75,
    "roleplay": 0.65,
}


@pytest.mark.skipif(
    not public_sets.available(),
    reason="../shared/data (public prompt sets) is not present beside the project",
)
@pytest.mark.parametrize("name", sorted(FLOORS))
def test_capability_accuracy_floor_on_public_sets(name: str) -> None:
    expected, load = public_sets.SETS[name]
    texts = load()
    labels, _ = classify(pa.array(texts, pa.string()))
    accuracy = sum(label == expected for label in labels.to_pylist()) / len(texts)
    assert accuracy >= FLOORS[name]


def test_any_script_and_size_is_featurised() -> None:
    prompts = [
        "这是一个关于排序算法的问题，请一步一步解释。",
        "مرحبا، كيف حالك؟ اشرح خطوة بخطوة",
        "emoji 🚀🔥 and control \x00\x07\x1b chars",
        "x" * 1_000_000,
        "```python\n" + "print(1)\n" * 100_000 + "```",
        "\u202eright-to-left override",
    ]
    out = featurise(
        pa.table({"request_id": [str(i) for i in range(len(prompts))], "prompt_text": prompts})
    )
    assert out.num_rows == len(prompts)
    assert out.column("prompt_chars").to_pylist()[3] == 1_000_000


def test_letters_of_every_script_are_kept_in_skeletons() -> None:
    out = skeleton(pa.array(["Straße über Ça", "这是一个关于排序的问题", "мир"])).to_pylist()
    assert "straße" in out[0] and "über" in out[0] and "ça" in out[0]
    assert "这是一个关于排序的问题" in out[1] and "мир" in out[2]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.text(alphabet="abc def()`1+2=step by x\n日本語テキスト", max_size=80), max_size=30)
)
def test_pattern_counts_equal_plain_counts(texts: list[str]) -> None:
    """Counting each pattern only where RE2's pattern set says it matches changes
    nothing but the speed."""
    from distillguard.features import capability

    array = pc.utf8_lower(pa.array(texts, pa.string()))
    plain = (
        np.stack(
            [
                np.minimum(pc.count_substring_regex(array, pattern=p).to_numpy(), 3)
                for p in capability.ALL_PATTERNS
            ],
            axis=1,
        )
        if texts
        else np.zeros((0, len(capability.ALL_PATTERNS)))
    )
    assert np.array_equal(capability._counts(array), plain)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet='abc .!?\nstep-by thinkcarefuly0`"', max_size=80), max_size=20))
def test_skeletons_masked_only_on_rows_asking_for_reasoning_are_the_same(
    texts: list[str],
) -> None:
    """featurise masks reasoning asks only in the rows whose scores found one."""
    from distillguard.features import capability

    lowered = pc.utf8_lower(pa.array(texts, pa.string()))
    _, cot = capability.text_scores(lowered, lowered=True)
    fast = skeleton(lowered, lowered=True, cot=cot > 0)
    assert fast.to_pylist() == skeleton(pa.array(texts, pa.string())).to_pylist()
    fast_signatures = signatures(lowered, lowered=True, cot=cot > 0)
    assert np.array_equal(fast_signatures, signatures(pa.array(texts, pa.string())))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=60) | st.none(), max_size=20))
def test_text_hashes_follow_their_definition(texts: list[str | None]) -> None:
    from distillguard.features import template

    got = template.text_hashes(pa.array(texts, pa.string()))
    expected = template._token_hashes(pa.array([t or "" for t in texts], pa.string()))
    assert np.array_equal(got, expected)
    assert len(set(got.tolist())) == len({t or "" for t in texts})


def _words(text: str) -> list[str]:
    """The definition of a skeleton's words: runs of letters and digits of any script (by
    RE2's Unicode tables, as the masks), `_`, `<` and `>`."""
    return re2.findall(r"[\p{L}\p{N}_<>]+", text)


def test_letters_new_in_recent_unicode_are_word_characters() -> None:
    """Kawi (Unicode 15) is a script of letters whatever Python's own tables know."""
    joined, apart = signatures(pa.array(["alpha\U00011f04beta gamma", "alpha beta gamma"]))
    assert not np.array_equal(joined, apart)
    assert np.array_equal(joined, signatures(pa.array(["alpha\U00011f04beta! gamma"]))[0])


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.text(
            alphabet=st.sampled_from(
                [
                    *"ab é—日.,!<>_-'9٣",
                    " ",
                    "\t",
                    "\n",
                    "\x0b",
                    "\x1c",
                    "\x85",
                    "\u00a0",
                    "\u1680",
                    "\u2003",
                    "\u2028",
                    "\u202f",
                    "\u205f",
                    "\u3000",
                    "\u200b",
                ]
            ),
            max_size=40,
        ),
        max_size=20,
    )
)
def test_words_are_runs_of_letters_and_digits(texts: list[str]) -> None:
    """The compiled scan splits exactly where the definition (`_words`) does."""
    _assert_scan_follows_the_definition(texts)


MASK_PIECES = [
    *"ab ef09.,@+-_`\"'\n\t\x0bhtps:/<>xé日٣",
    "http://",
    "https://",
    "```",
    "deadbeef",
    "a@b.c",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(MASK_PIECES), max_size=40).map("".join), max_size=8))
def test_the_compiled_scan_masks_as_the_definition(texts: list[str]) -> None:
    """Code, addresses, hex, quotes and numbers are masked by the compiled scan exactly
    as by one pass of the masks' alternation in Python's `re` (`skeleton`)."""
    _assert_scan_follows_the_definition(texts)


def test_quotes_of_up_to_200_characters_are_masked() -> None:
    texts = [f'say "{"é" * n}" now' for n in (1, 200, 201)] + ["on 'a\nb' \"\" ok"]
    _assert_scan_follows_the_definition(texts)
    masked = skeleton(pa.array(texts)).to_pylist()
    assert ["<quote>" in t for t in masked] == [True, True, False, False]


def _assert_scan_follows_the_definition(texts: list[str]) -> None:
    from distillguard.features import template

    lowered = pc.utf8_lower(pa.array(texts, pa.string()))
    hashes, lengths = template._word_hashes(lowered)
    defined = skeleton(lowered, lowered=True, cot=np.zeros(len(texts), dtype=bool))
    starts = np.concatenate([[0], np.cumsum(lengths)])
    for row, text in enumerate(defined.to_pylist()):
        words = pa.array(_words(text), pa.string())
        expected = template._token_hashes(words).tolist() if len(words) else []
        assert hashes[starts[row] : starts[row + 1]].tolist() == expected
