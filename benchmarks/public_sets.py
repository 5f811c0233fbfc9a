"""Labelled public prompt sets from ../shared/data, for measuring content features.

Each loader returns prompt texts of one known capability. Used by
benchmarks/capability_accuracy.py and by tests (which skip without the folder).
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _jsonl(path: Path, field: str) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line)[field] for line in handle.read().split("\n") if line.strip()]


def _json(path: Path, field: str) -> list[str]:
    return [r[field] for r in json.loads(path.read_text(encoding="utf-8")) if r.get(field)]


def _arena(sub: str) -> list[str]:
    path = DATA / "arena_hard" / "arena-hard-v2.0_question.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]
    return [r["prompt"] for r in rows if r.get("subcategory") == sub]


def _gorilla() -> list[str]:
    texts = []
    for path in sorted((DATA / "gorilla").glob("*_eval.json")):
        for line in path.read_text(encoding="utf-8").split("\n"):
            if line.strip():
                code = json.loads(line)["code"]
                found = re.search(r"###Instruction:(.*?)###Output", code, re.S)
                if found:
                    texts.append(found.group(1).strip())
    return texts


SETS: dict[str, tuple[str, Callable[[], list[str]]]] = {
    "humaneval": ("coding", lambda: _jsonl(DATA / "human_eval" / "HumanEval.jsonl.gz", "prompt")),
    "mbpp": (
        "coding",
        lambda: list(
            json.loads((DATA / "mbpp" / "mbppplus.json").read_text(encoding="utf-8")).values()
        ),
    ),
    "codealpaca": (
        "coding",
        lambda: _json(DATA / "codealpaca" / "code_alpaca_2k.json", "instruction"),
    ),
    "conala": ("coding", lambda: _json(DATA / "conala" / "conala-test.json", "intent")),
    "arena-coding": ("coding", lambda: _arena("coding")),
    "gsm8k": ("math_reasoning", lambda: _jsonl(DATA / "gsm8k" / "test.jsonl", "question")),
    "arena-math": ("math_reasoning", lambda: _arena("math")),
    "toolformer": (
        "agentic",
        lambda: _json(DATA / "gpteacher" / "toolformer-dedupe-only-dataset.json", "instruction"),
    ),
    "gorilla": ("agentic", _gorilla),
    "roleplay": (
        "creative",
        lambda: _json(
            DATA / "gpteacher" / "roleplay-simple-deduped-roleplay-instruct.json", "instruction"
        ),
    ),
    "arena-creative": ("creative", lambda: _arena("creative_writing")),
}


def available() -> bool:
    return (DATA / "gsm8k").is_dir() and (DATA / "arena_hard").is_dir()
