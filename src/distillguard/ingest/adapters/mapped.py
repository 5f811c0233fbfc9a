"""Plain JSONL, CSV and Parquet: canonical column names, or a column mapping.

A mapping names, for each canonical column, the source field that fills it; a dotted
path reaches into nested JSON (`usage.prompt_tokens`, `body.messages`). Fields holding
a message list (`messages`) may be mapped to `prompt_text` and are flattened to the last
user turn. It comes from a YAML file (either flat or under `columns:`) or from
`--map column=field` on the command line.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from distillguard.errors import UsageError, yaml_error
from distillguard.ingest.adapters.common import Reject, dig, flatten_chat, messages_of
from distillguard.schema import TABLES, required

CHAT_COLUMNS = ("prompt_text", "system_text")


class CanonicalAdapter:
    """Records already named as the canonical table's columns (e.g. our own exports)."""

    name = "canonical"

    def __init__(self, table: str = "exchanges") -> None:
        self.table = table
        self._columns = set(TABLES[table].names)
        self._required = set(required(TABLES[table]))

    def sniff(self, value: Any) -> bool:
        return isinstance(value, dict) and self._required <= value.keys()

    def rows(self, value: Any) -> Iterator[dict[str, Any] | Reject | None]:
        yield {k: v for k, v in value.items() if k in self._columns}


class MappedAdapter:
    """Records whose fields are renamed (and reached into) by a column mapping."""

    name = "mapped"

    def __init__(self, mapping: Mapping[str, str], table: str = "exchanges") -> None:
        unknown = [c for c in mapping if c not in TABLES[table].names]
        if unknown:
            raise UsageError(
                f"the mapping names unknown {table} column(s): {', '.join(sorted(unknown))}; "
                f"known: {', '.join(TABLES[table].names)}"
            )
        self.table = table
        self.mapping = {column: str(path).split(".") for column, path in mapping.items()}
        self._columns = set(TABLES[table].names)
        self.filled: set[str] = set()  # mapped columns whose field some record had

    def sniff(self, value: Any) -> bool:
        return isinstance(value, dict)

    def rows(self, value: Any) -> Iterator[dict[str, Any] | Reject | None]:
        row = {k: v for k, v in value.items() if k in self._columns and k not in self.mapping}
        for column, path in self.mapping.items():
            name = ".".join(path)
            field = value.get(name) if name in value else dig(value, *path)
            row[column] = _flattened(field, column) if column in CHAT_COLUMNS else field
            if column == "system_text" and path == self.mapping.get("prompt_text"):
                # one messages field mapped to both: a plain string in it is the prompt
                row[column] = None if messages_of(field) is None else row[column]
            if field is not None:
                self.filled.add(column)
        yield row


def _flattened(field: Any, column: str) -> Any:
    """A message list (or one held as JSON text) reduced to the column's turn; any other
    value as it came, so a prompt cell that is JSON stays the prompt."""
    messages = messages_of(field)
    if messages is None:
        return field
    prompt, system, _ = flatten_chat(messages)
    return prompt if column == "prompt_text" else system


def load_mapping(path: str | None, pairs: list[str]) -> dict[str, str]:
    """The column mapping from a YAML file and `column=field` pairs (pairs win)."""
    mapping: dict[str, str] = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"cannot read the mapping file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"the mapping file {path} is not UTF-8 text") from None
        except yaml.YAMLError as exc:
            problem = yaml_error(exc)
            raise UsageError(f"the mapping file {path} is not valid YAML: {problem}") from None
        if isinstance(loaded, dict) and isinstance(loaded.get("columns"), Mapping):
            loaded = loaded["columns"]
        if not isinstance(loaded, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in loaded.items()
        ):
            raise UsageError(
                f"the mapping file {path} must map column names to field names, "
                "e.g. 'ts: created_at'"
            )
        mapping.update(loaded)
    mapping.update(parse_pairs(pairs, "--map"))
    return mapping


def parse_pairs(pairs: list[str], option: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        column, sep, value = pair.partition("=")
        if not sep or not column.strip() or (option == "--map" and not value.strip()):
            raise UsageError(f"{option} takes COLUMN=VALUE, got {pair!r}")
        out[column.strip()] = value.strip()
    return out
