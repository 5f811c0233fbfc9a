"""Which capability a prompt targets, and how hard it asks for the model's reasoning.

A transparent rule set rather than a trained model: every category is a handful of
regular expressions over the lower-cased prompt, evaluated by Arrow in C++, so an
analyst can read why a prompt was put where it was. The categories follow the design
brief. Content is one signal among many: public benchmark prompts look like harvesting
prompts, and a researcher sending them is legitimate, so nothing is flagged on content
alone.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import re2

CATEGORIES = (
    "coding",
    "agentic",
    "math_reasoning",
    "grading",
    "translation",
    "creative",
    "chain_of_thought",
    "general_chat",
)

PATTERNS: dict[str, list[str]] = {
    "coding": [
        r"```",
        r"\b(def|class|function|method|variable|compile[rd]?|debug|refactor|regex)\b",
        r"\b(python|javascript|typescript|java|c\+\+|c#|rust|golang|kotlin|sql|bash|html|css)\b",
        r"\b(code|program|script|algorithm|implement\w*|unit tests?|bug|stack ?trace)\b",
        r"\b(return|import|print|lambda|array|list comprehension|recursion|dataframe)\b",
        r"\b(string|dictionary|dict|tuple|json|csv|pandas|numpy|column|integer|boolean|loop)s?\b",
    ],
    "agentic": [
        r"\b(tools?|tool[ _]calls?|function[ _]call\w*|autonomous|agent\w*|toolformer)\b",
        r"\b(use the tools|call (the )?tools?|run the tests|read_file|run_shell|browse)\b",
        r"\b(you have access to|access: |useful for when you need|available (tools|apis))",
        r"\b(next action|observation|goal:)",
        r"\b(apis?|api call|endpoint|invoke)\b",
    ],
    "math_reasoning": [
        r"\b(solve|equation|calculate|compute|probability|prove|integral|derivative)\b",
        r"\b(how (many|much)|percent\w*|average|sum of|total|remainder|ratio)\b",
        r"\d+\s*[-+*/×÷^=]\s*\d+",
        r"\b(math\w*|theorem|puzzle|logic|geometry|algebra|prime)\b",
        r"\\(frac|sum|int|sqrt|cdot|le|ge)|\$[^$\n]{2,80}\$",
    ],
    "grading": [
        r"\b(grade|rate|score)\b.{0,40}\b(answer|response|output|completion|essay)\b",
        r"\bon a scale (of|from)\b",
        r"\b(rubric|critique|which (response|answer) is better)\b",
        r"\b(evaluate|judge) (the|this|each|these) (answer|response|output)s?\b",
    ],
    "translation": [
        r"\btranslat\w*\b",
        r"\b(in|into|to) (french|spanish|german|chinese|japanese|korean|"
        r"arabic|russian|portuguese|italian|hindi|basque|dutch|turkish|english)\b",
        r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\p{Cyrillic}\p{Arabic}\p{Devanagari}]{4,}",
    ],
    "creative": [
        r"\b(poem|story|stories|song|lyrics|haiku|limerick|novel|screenplay|fiction|fairy tale)\b",
        r"\b(role ?play|pretend|act as|character|imagine|you are an? |in the style of)",
        r"\bwrite (a|an|me a) (short )?(story|poem|essay|letter|speech|blog|scene)\b",
        r"\b(describe (the|a) (scene|setting)|narrat\w+|fantasy|villain|hero|dialogue)\b",
    ],
}
COT_PATTERNS = [
    r"step[- ]by[- ]step",
    r"chain[- ]of[- ]thought",
    r"<think(ing)?>",
    r"\b(show|explain|write out|walk me through|lay out|describe) (all |your |the |every )*"
    r"(work|reasoning|steps|thought process|thinking)",
    r"\b(justify|reconstruct|detail) (each|every|your|the) (step|reasoning|solution)",
    r"\breasoning (behind|that leads|process)\b",
    r"\bthink (it )?(through|carefully)\b",
]
WEIGHTS = {
    "coding": 1.0,
    "agentic": 1.2,
    "math_reasoning": 1.0,
    "grading": 2.0,
    "translation": 1.5,
    "creative": 1.2,
}


# Every pattern, in the order of the categories and then the chain-of-thought asks.
ALL_PATTERNS = [p for c in WEIGHTS for p in PATTERNS[c]] + COT_PATTERNS
MAX_COUNT = 3  # matches of one pattern beyond this add nothing


@functools.cache
def _pattern_set() -> re2.Set:
    patterns = re2.Set.SearchSet(re2.Options())
    for pattern in ALL_PATTERNS:
        patterns.Add(pattern)
    patterns.Compile()
    return patterns


def _counts(text: pa.Array) -> np.ndarray:
    """Per text and pattern, its matches (at most MAX_COUNT). RE2's multi-pattern search
    finds which patterns match a text in one pass; Arrow then counts each pattern only in
    the texts it matches (a fifth of them at most, usually none). One regular-expression
    pass per pattern over every text cost three times as much."""
    found = _pattern_set().Match
    matched = [found(t) or () for t in text.cast(pa.binary()).to_pylist()]
    rows = np.repeat(np.arange(len(matched)), [len(m) for m in matched])
    columns = np.fromiter((j for m in matched for j in m), dtype=np.int64, count=len(rows))
    counts = np.zeros((len(text), len(ALL_PATTERNS)), dtype=np.float64)
    for j, pattern in enumerate(ALL_PATTERNS):
        where = rows[columns == j]
        if len(where):
            n = pc.count_substring_regex(text.take(pa.array(where)), pattern=pattern)
            counts[where, j] = np.minimum(n.to_numpy(zero_copy_only=False), MAX_COUNT)
    return counts


def classify(
    prompts: pa.Array,
    tools_declared: pa.Array | None = None,
    reasoning_requested: pa.Array | None = None,
    max_tokens: pa.Array | None = None,
) -> tuple[pa.Array, pa.Array]:
    """(capability, chain-of-thought elicitation score in 0..1) for each prompt."""
    scores, cot_hits = text_scores(prompts)
    return label(scores, cot_hits, tools_declared, reasoning_requested, max_tokens)


def text_scores(prompts: pa.Array, *, lowered: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """What the text alone says: weighted pattern hits per category (rows x categories
    with patterns) and requests for the reasoning. A pure function of each text, so a
    batch's repeated prompts are scored once."""
    text = pc.fill_null(prompts, "")
    counts = _counts(text if lowered else pc.utf8_lower(text))
    scores, start = np.zeros((len(text), len(WEIGHTS))), 0
    for i, category in enumerate(WEIGHTS):
        end = start + len(PATTERNS[category])
        scores[:, i] = counts[:, start:end].sum(axis=1) * WEIGHTS[category]
        start = end
    return scores, counts[:, start:].sum(axis=1)


def label(
    scores: np.ndarray,
    cot_hits: np.ndarray,
    tools_declared: pa.Array | None = None,
    reasoning_requested: pa.Array | None = None,
    max_tokens: pa.Array | None = None,
) -> tuple[pa.Array, pa.Array]:
    """Capability and chain-of-thought score from text scores and the request's own
    fields: declared tools count towards agentic work."""
    if tools_declared is not None:
        tools = pc.fill_null(tools_declared, 0).to_numpy(zero_copy_only=False)
        scores = scores.copy()
        scores[:, 1] += np.where(tools > 0, 2.0, 0.0)
    best = scores.argmax(axis=1)
    labels = np.array(list(WEIGHTS), dtype=object)[best]
    empty = scores.max(axis=1) < 1.0
    labels[empty & (cot_hits > 0)] = "chain_of_thought"
    labels[empty & (cot_hits == 0)] = "general_chat"
    return pa.array(labels, pa.string()), pa.array(
        _cot_score(cot_hits, reasoning_requested, max_tokens), pa.float32()
    )


def _cot_score(
    hits: np.ndarray, requested: pa.Array | None, max_tokens: pa.Array | None
) -> np.ndarray:
    """Phrases asking for the reasoning dominate; reasoning effort asked for, and a token
    ceiling far above a normal answer, add to it."""
    score = 1.0 - np.exp(-0.9 * hits)
    if requested is not None:
        flags = pc.fill_null(requested, False).to_numpy(zero_copy_only=False).astype(bool)
        score = score + np.where(flags, 0.25, 0.0) * (1 - score)
    if max_tokens is not None:
        ceiling = pc.fill_null(max_tokens, 0).to_numpy(zero_copy_only=False) >= 16000
        score = score + np.where(ceiling, 0.1, 0.0) * (1 - score)
    return np.round(score, 4)
