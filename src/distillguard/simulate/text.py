"""Prompt text written by the simulator: templates, vocabularies, code and tool fragments.

Every generator is the project's own. Campaign prompts come from a pool of templates
with slots; the pool's items are numbered so that a campaign can split them between its
accounts (complementary coverage), and an evasion can reword each account's templates.
`Corpus` swaps the filler topics for real text from any folder of JSONL prompt sets
when realism matters more than self-containment.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

LANGS = ["Python", "TypeScript", "Go", "Rust", "Java", "C++", "Kotlin", "SQL", "Bash", "C#"]
TASKS = [
    "parses a log line into fields",
    "merges overlapping intervals",
    "deduplicates records by key",
    "retries a flaky HTTP call with backoff",
    "computes a moving median",
    "validates an e-mail address",
    "flattens a nested dictionary",
    "finds the shortest path in a weighted graph",
    "rate-limits calls per user",
    "serialises a tree to JSON",
    "detects a cycle in a linked list",
    "streams a large CSV in chunks",
    "implements an LRU cache",
    "diffs two lists of records",
    "schedules jobs with priorities",
]
STRUCTURES = [
    "binary heap",
    "trie",
    "hash map",
    "ring buffer",
    "B-tree",
    "adjacency list",
    "sorted array",
    "skip list",
    "segment tree",
    "union-find",
]
DOMAINS = [
    "billing service",
    "inventory system",
    "chat backend",
    "payment gateway",
    "CI runner",
    "search index",
    "feature store",
    "IoT collector",
    "game server",
    "ledger",
]
TOPICS = [
    "a weekend trip to the coast",
    "houseplants that survive low light",
    "a birthday message for my sister",
    "how tides work",
    "a recipe with lentils",
    "the history of tea",
    "tips for a job interview",
    "a short poem about autumn",
    "how vaccines work",
    "choosing a used bicycle",
    "a polite complaint to my landlord",
    "learning Spanish fast",
]
NAMES = [
    "Ava",
    "Ben",
    "Chen",
    "Dara",
    "Eli",
    "Fatima",
    "Goran",
    "Hana",
    "Ivan",
    "Jun",
    "Kofi",
    "Lena",
    "Mateo",
    "Nia",
    "Omar",
    "Priya",
]
COT = [
    "Explain your reasoning step by step before giving the final answer.",
    "Think through this carefully and write out every step of your reasoning.",
    "Show your full chain of thought inside <thinking> tags, then the answer.",
    "Justify each step of the solution in detail, then state the result.",
    "Reconstruct the complete reasoning that leads to the answer, step by step.",
]
TOOLS = [
    "read_file",
    "write_file",
    "run_tests",
    "search_code",
    "list_directory",
    "apply_patch",
    "run_shell",
    "open_pull_request",
    "query_database",
    "fetch_url",
]
RUBRIC = ["correctness", "helpfulness", "harmlessness", "style", "reasoning quality", "concision"]
CHIT_CHAT = [
    "hi! how are you today?",
    "thanks, that was helpful",
    "can you tell me a joke?",
    "what's a good movie for tonight?",
    "good morning!",
    "what's the weather like in spring in Lisbon?",
]
STYLES = [  # an operator's framing: opening and closing around every template
    ("", ""),
    ("### Instruction\n", "\n### Response"),
    ("[task] ", " [/task]"),
    ("You are an expert assistant. ", " Be complete."),
    ("<request>\n", "\n</request>"),
    ("Item for review. ", " Output in Markdown."),
]
WORDINGS = {  # per capability, the operators' different ways of asking
    "coding": [
        "Write a {lang} function task_{n} that {task} using a {structure}. Include type "
        "hints and tests.",
        "Implement, in {lang}, code (exercise {n}) that {task}; build it on a {structure} "
        "and add unit tests.",
        "I need production {lang} for ticket {n}: something that {task}. Use a {structure}, "
        "test it.",
    ],
    "agentic": [
        "You are an autonomous software agent with tools: {tools}. Goal: in the {domain} "
        "codebase (issue #{n}), make the module that {task} pass its tests. Plan, call "
        "tools, and report each step.",
        "Tools available: {tools}. Repository: {domain}, ticket {n}. Fix the module that "
        "{task} until the suite is green; narrate every tool call.",
        "Act as a coding agent ({tools}). Run {n}: the {domain} project has a failing "
        "module that {task}. Investigate, patch, verify.",
    ],
    "reasoning": [
        "Problem {n}: a {structure} holds {a} items and each operation on the {domain} adds "
        "{b}. After {c} operations, how many items?",
        "Exercise #{n}. Start with {a} entries in a {structure} of the {domain}; every round "
        "appends {b}. What is the count after {c} rounds?",
        "Q{n}) The {domain} keeps {a} records in a {structure}. It gains {b} per step for "
        "{c} steps. Final total?",
    ],
    "grading": [
        "Grade the following answer for {rubric} on a scale of 1 to 10 and explain the "
        "grade. Question: how would you {task}? Answer: {answer}.",
        "Score this response (1-10) on {rubric}, with a rationale. Prompt: {task}. "
        "Response: {answer}.",
        "As a reward model, rate the reply for {rubric} from 1 to 10 and justify. Task: "
        "{task}. Reply: {answer}.",
    ],
}
SYNONYMS = {
    "Write": ["Write", "Implement", "Create", "Code up", "Produce"],
    "function": ["function", "routine", "helper", "method"],
    "Explain": ["Explain", "Describe", "Walk through", "Lay out"],
    "carefully": ["carefully", "thoroughly", "rigorously", "in detail"],
    "Solve": ["Solve", "Work out", "Answer", "Figure out"],
}


class Corpus:
    """Real texts from every JSONL file under a folder (fields prompt, instruction, …)."""

    FIELDS = ("prompt", "instruction", "question", "intent", "text", "problem_statement")

    def __init__(self, folder: str | Path, limit: int = 50_000) -> None:
        self.texts: list[str] = []
        for path in sorted(Path(folder).rglob("*.jsonl")):
            for line in path.read_text(encoding="utf-8", errors="replace").split("\n"):
                if len(self.texts) >= limit:
                    break
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                text = next(
                    (
                        record[f]
                        for f in self.FIELDS
                        if isinstance(record, dict) and isinstance(record.get(f), str)
                    ),
                    None,
                )
                if text and 10 < len(text) < 4000:
                    self.texts.append(text)
        if not self.texts:
            raise ValueError(f"no prompt texts found in JSONL files under {folder}")


class Prompts:
    """Prompt generators keyed by name; `rng` makes every text reproducible."""

    def __init__(self, rng: random.Random, corpus: Corpus | None = None) -> None:
        self.rng = rng
        self.corpus = corpus

    def topic(self) -> str:
        if self.corpus is not None:
            return self.rng.choice(self.corpus.texts)
        return f"Tell me about {self.rng.choice(TOPICS)}."

    def make(self, kind: str) -> str:
        r = self.rng
        if kind == "chat":
            return self.topic() if r.random() < 0.7 else r.choice(CHIT_CHAT)
        if kind in ("developer", "student", "reseller") and self.corpus and r.random() < 0.5:
            return self.rng.choice(self.corpus.texts)
        if kind == "developer":
            return r.choice(
                [
                    f"Why does my {r.choice(LANGS)} code that {r.choice(TASKS)} time out?",
                    f"Review this {r.choice(LANGS)} snippet for our {r.choice(DOMAINS)}:\n"
                    f"{code_fragment(r)}",
                    f"How should I structure a {r.choice(STRUCTURES)} for a {r.choice(DOMAINS)}?",
                ]
            )
        if kind == "student":
            return (
                f"My homework asks for a {r.choice(LANGS)} program that {r.choice(TASKS)}. "
                "Can you give me a hint, not the answer?"
            )
        if kind == "agentic":
            return (
                f"Continue the task: in the {r.choice(DOMAINS)} repository, fix the failing "
                f"test for the module that {r.choice(TASKS)}. Use the tools."
            )
        if kind == "benchmark":
            return benchmark_item(r.randrange(BENCHMARK_SIZE))
        if kind == "reseller":
            return self.make(r.choice(["chat", "developer", "chat"]))
        return self.topic()


BENCHMARK_SIZE = 1_000  # a public benchmark is a fixed set that every runner sends as is


def benchmark_item(i: int) -> str:
    """Question `i` of the simulator's public benchmark: the same text for everyone."""
    h = (i * 2654435761) & 0xFFFFFFFF
    a, b, c = 2 + h % 89, 2 + (h >> 8) % 39, 2 + (h >> 16) % 8
    return (
        f"Question: {NAMES[(h >> 24) % len(NAMES)]} has {a} marbles and buys {b} bags of "
        f"{c} more. How many marbles now?\nLet's think step by step."
    )


def code_fragment(r: random.Random) -> str:
    name = r.choice(["load", "merge", "score", "route", "flush"])
    return (
        f"def {name}_{r.randint(1, 99)}(items, limit={r.randint(2, 64)}):\n"
        f"    out = [x for x in items if x.weight > {r.random():.2f}]\n"
        "    return sorted(out)[:limit]"
    )


def enterprise_template(r: random.Random) -> str:
    """One fixed template an enterprise app fills for each of its end users."""
    product = r.choice(DOMAINS)
    return (
        f"You are the assistant of our {product}. Customer {{customer}} asks: "
        f'"{{question}}" Answer in two sentences using the account notes: {{notes}}'
    )


def fill_enterprise(template: str, r: random.Random) -> str:
    return template.format(
        customer=f"#{r.randint(10000, 99999)}",
        question=r.choice(TOPICS),
        notes=f"plan {r.choice('ABC')}, tenure {r.randint(1, 60)} months",
    )


def batch_template(r: random.Random) -> str:
    labels = ", ".join(r.sample(["billing", "bug", "feature", "praise", "churn", "spam"], 4))
    return (
        f"Classify the ticket into one of: {labels}. Reply with the label only.\nTicket: {{ticket}}"
    )


def fill_batch(template: str, r: random.Random) -> str:
    return template.format(ticket=f"{r.choice(TOPICS)} (ref {r.randint(100000, 999999)})")


class CampaignPool:
    """A campaign's templates and their slot values, numbered so accounts can split them.
    Each operator writes in a house style (its own wording and framing), so two
    independent campaigns that target one capability do not share templates: a style
    the scenario's earlier campaigns hold (`taken`: their capability and style) is
    passed over, as is one whose wording they use, while there are enough of both."""

    def __init__(
        self,
        capability: str,
        templates: int,
        r: random.Random,
        taken: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.capability = capability
        self.style = house_style(r.randrange(len(STYLES)), capability, taken)
        self.templates = [self._template(capability, i, r) for i in range(templates)]

    def _template(self, capability: str, i: int, r: random.Random) -> str:
        cot = COT[i % len(COT)]
        if capability == "mixed":
            capability = ("coding", "agentic", "reasoning", "grading")[i % 4]
        opening, closing = STYLES[self.style]
        body = WORDINGS[capability][self.style % len(WORDINGS[capability])]
        if "{tools}" in body:
            body = body.replace("{tools}", ", ".join(r.sample(TOOLS, 4)))
        if "{rubric}" in body:
            body = body.replace("{rubric}", r.choice(RUBRIC))
        return f"{opening}{body} {cot}{closing}"

    def item(self, k: int, template_of: list[str] | None = None) -> str:
        """Pool item `k`: a template and its slot values, all derived from `k` alone
        (arithmetic, no generator: this runs once per campaign exchange)."""
        templates = template_of or self.templates
        template = templates[k % len(templates)]
        h = (k * 2654435761) & 0xFFFFFFFF  # spread neighbouring items over the slot values
        slots = {
            "lang": LANGS[h % len(LANGS)],
            "task": TASKS[(h >> 4) % len(TASKS)],
            "structure": STRUCTURES[(h >> 8) % len(STRUCTURES)],
            "domain": DOMAINS[(h >> 12) % len(DOMAINS)],
            "n": k,
            "a": 3 + (h >> 16) % 497,
            "b": 2 + (h >> 20) % 38,
            "c": 2 + (h >> 24) % 28,
        }
        if "{answer}" in template:
            slots["answer"] = f"def step_{h % 97}(items): return sorted(items)[:{2 + h % 60}]"
        return template.format(**slots)


def house_style(drawn: int, capability: str, taken: Sequence[tuple[str, int]]) -> int:
    """The first style from `drawn` on that no earlier campaign holds and whose wording
    (style modulo the wordings a capability has) none targeting the same capability
    uses; failing that, one with such a wording though its framing is taken (the
    wording is most of a template's text); then any free style; then `drawn`. Two
    campaigns in one scenario drew one style (demo, seed 2) or one wording (evasive,
    seeds 11 and 2) by chance, and their same text made them look like one."""
    wordings = len(WORDINGS["coding"])
    order = [(drawn + step) % len(STYLES) for step in range(len(STYLES))]
    held = {style for _, style in taken}
    used = {style % wordings for other, style in taken if _overlap(capability, other)}
    fresh = [style for style in order if style % wordings not in used]
    free = [style for style in order if style not in held]
    return next(iter([s for s in fresh if s in free] + fresh + free), drawn)


def _overlap(one: str, other: str) -> bool:
    """Whether two campaigns ask for a capability in common ("mixed" asks for all)."""
    return "mixed" in (one, other) or one == other


def paraphrase(template: str, r: random.Random) -> str:
    """Reword a template (synonyms, one sentence moved) while keeping its slots."""
    for word, options in SYNONYMS.items():
        template = template.replace(word, r.choice(options))
    sentences = template.split(". ")
    if len(sentences) > 2:
        moved = sentences.pop(r.randrange(1, len(sentences)))
        sentences.insert(0, moved)
    prefix = r.choice(["", "Please help. ", "Quick one: ", "Task: ", "Hello! "])
    return prefix + ". ".join(sentences)
