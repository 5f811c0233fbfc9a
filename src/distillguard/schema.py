"""The canonical tables: the contract between every stage of distillguard.

Each table is an Arrow schema. Ingestion produces `exchanges` and `accounts`; the
simulator produces `labels` and `exchange_labels`; detection writes the findings tables.
`conform` is the one gate every table passes through: it checks required columns,
casts to the canonical types and normalises timestamps to UTC.

Two columns extend the design brief's list: `exchanges.ip_prefix` and
`accounts.signup_ip_prefix` hold the /24 (IPv4) or /48 (IPv6) network of the address,
or its keyed fingerprint when addresses are pseudonymised, so network linkage survives
pseudonymisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from distillguard.errors import SchemaError

TS = pa.timestamp("us", tz="UTC")

EXCHANGES = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("ts", TS, nullable=False),
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("prompt_text", pa.string()),
        pa.field("api_key_id", pa.string()),
        pa.field("end_user_id", pa.string()),
        pa.field("ip", pa.string()),
        pa.field("ip_prefix", pa.string()),
        pa.field("user_agent", pa.string()),
        pa.field("operation", pa.string()),
        pa.field("system_text", pa.string()),
        pa.field("response_text", pa.string()),
        pa.field("input_tokens", pa.int64()),
        pa.field("output_tokens", pa.int64()),
        pa.field("reasoning_tokens", pa.int64()),
        pa.field("reasoning_requested", pa.bool_()),
        pa.field("max_tokens", pa.int64()),
        pa.field("temperature", pa.float64()),
        pa.field("tools_declared", pa.int32()),
        pa.field("tool_calls", pa.int32()),
        pa.field("conversation_id", pa.string()),
        pa.field("turn_index", pa.int32()),
        pa.field("status", pa.int32()),
        pa.field("stream", pa.bool_()),
    ]
)

ACCOUNTS = pa.schema(
    [
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("created_at", TS),
        pa.field("payment_fingerprint", pa.string()),
        pa.field("email_domain", pa.string()),
        pa.field("signup_ip", pa.string()),
        pa.field("signup_ip_prefix", pa.string()),
        pa.field("signup_channel", pa.string()),
        pa.field("verification", pa.string()),
        pa.field("country", pa.string()),
    ]
)

LABELS = pa.schema(
    [
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("campaign_id", pa.string()),
        pa.field("role", pa.string()),
    ]
)

EXCHANGE_LABELS = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("campaign_id", pa.string()),
    ]
)

# What `detect` writes to its findings folder (summary.json last), and `simulate` to its.
FINDINGS_FILES = ("accounts.parquet", "campaigns.json", "exchanges.parquet", "summary.json")
FINDINGS_LOCK = ".lock"  # held by detect replacing the files, shared by a report reading them
SIMULATION_FILES = (
    "exchanges.parquet",
    "accounts.parquet",
    "labels.parquet",
    "exchange_labels.parquet",
    "truth.json",
)
FINDINGS_ACCOUNTS = pa.schema(
    [
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("flagged", pa.bool_(), nullable=False),
        pa.field("campaign_id", pa.string()),
        pa.field("reasons", pa.list_(pa.string())),
    ]
)

FINDINGS_EXCHANGES = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("campaign_id", pa.string(), nullable=False),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "exchanges": EXCHANGES,
    "accounts": ACCOUNTS,
    "labels": LABELS,
    "exchange_labels": EXCHANGE_LABELS,
    "findings_accounts": FINDINGS_ACCOUNTS,
    "findings_exchanges": FINDINGS_EXCHANGES,
}

OPERATIONS = ("chat", "completion", "responses", "messages", "embeddings", "batch")
SIGNUP_CHANNELS = (
    "self-serve",
    "education",
    "startup-program",
    "security-research",
    "enterprise",
    "reseller",
)
VERIFICATION = ("none", "email", "phone", "card", "kyc")


def required(schema: pa.Schema) -> list[str]:
    """Names of the columns a table cannot do without."""
    return [f.name for f in schema if not f.nullable]


def empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


def conform(table: pa.Table, schema: pa.Schema, *, name: str = "table") -> pa.Table:
    """Return `table` with exactly `schema`'s columns, in order, cast to its types.

    Missing optional columns are added as nulls and unknown columns dropped. A missing
    required column, a null in one, or a value that cannot be cast raises SchemaError
    naming the column. Timestamps without a zone are taken as UTC; zoned ones are converted.
    """
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            if not field.nullable:
                raise SchemaError(f"{name}: required column '{field.name}' is missing")
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        column = _cast(table.column(field.name), field, name)
        if not field.nullable and column.null_count:
            raise SchemaError(
                f"{name}: required column '{field.name}' has {column.null_count} null value(s)"
            )
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def _cast(column: pa.ChunkedArray, field: pa.Field, name: str) -> pa.ChunkedArray:
    if column.type == field.type:
        return column
    try:
        if pa.types.is_timestamp(field.type) and pa.types.is_timestamp(column.type):
            if column.type.tz is None:
                column = pc.assume_timezone(column, "UTC")
            # Nanoseconds (pandas' default) to microseconds: what is cut is below the
            # schema's resolution, not data.
            return column.cast(field.type, safe=column.type.unit != "ns")
        return column.cast(field.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SchemaError(
            f"{name}: column '{field.name}' of type {column.type} cannot be read as "
            f"{field.type}: {exc}"
        ) from None


def check_names(names: Sequence[str], schema: pa.Schema) -> list[str]:
    """Names in `names` that are not columns of `schema` (for mapping files)."""
    known = set(schema.names)
    return [n for n in names if n not in known]
