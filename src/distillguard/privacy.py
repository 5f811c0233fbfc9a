"""Keyed pseudonymisation of identifiers and addresses.

Identifiers are replaced by HMAC-SHA256 under a key the operator holds, so the same
account maps to the same token in every file and run, while nobody without the key can
reverse or test a guess. Addresses also keep a keyed fingerprint of their network (/24 for
IPv4, /48 for IPv6): two accounts behind one office or proxy pool stay linkable.
Without a key, values pass through and the prefix is written in the clear.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa

from distillguard.errors import UsageError

TOKEN_HEX = 32  # 128 bits: collisions are negligible at any traffic volume
MIN_KEY_BYTES = 16

# Columns pseudonymised in each table, and the address columns with their prefix column.
IDENTIFIERS = {
    "exchanges": ("account_id", "api_key_id", "end_user_id"),
    "accounts": ("account_id", "payment_fingerprint", "email_domain"),
}
ADDRESSES = {"exchanges": ("ip", "ip_prefix"), "accounts": ("signup_ip", "signup_ip_prefix")}


def load_key(path: str | Path) -> bytes:
    """Read an HMAC key file; the key itself is never echoed, even in errors."""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise UsageError(f"cannot read the key file {path}: {exc.strerror}") from None
    if len(key) < MIN_KEY_BYTES:
        raise UsageError(
            f"the key file {path} holds {len(key)} bytes; use at least {MIN_KEY_BYTES} "
            "(e.g. `head -c 32 /dev/urandom | base64 > key`)"
        )
    return key


def parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client address in `value`, which may carry a port, brackets or a forwarded list."""
    text = value.split(",")[0].strip()
    if text.startswith("["):
        text = text[1:].split("]")[0]
    elif text.count(":") == 1:
        text = text.split(":")[0]
    try:
        return ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None


def network(value: str) -> str | None:
    """The /24 or /48 network of an address, as text; None if it is not an address."""
    quick = _ipv4_network(value)
    if quick is not None:
        return quick
    if "/" in value:
        return _network_of_range(value)
    address = parse_ip(value)
    if address is None:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    bits = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


def _ipv4_network(value: str) -> str | None:
    """Fast path for the common case, a bare dotted IPv4 address."""
    parts = value.split(".")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 and int(p) < 256 for p in parts):
        return None
    if any(len(p) > 1 and p[0] == "0" for p in parts):
        return None  # leading zeros: let ipaddress decide
    return f"{parts[0]}.{parts[1]}.{parts[2]}.0/24"


def _network_of_range(value: str) -> str | None:
    try:
        net = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        return None
    bits = 24 if net.version == 4 else 48
    return str(net.supernet(new_prefix=bits)) if net.prefixlen > bits else str(net)


class Pseudonymiser:
    """Maps identifiers to keyed tokens; `key_id` names the key without revealing it."""

    def __init__(self, key: bytes | None) -> None:
        self._key = key
        self.key_id = key_id(key) if key else None
        self.token = lru_cache(maxsize=1 << 18)(self._token)
        self._prefix_cached = lru_cache(maxsize=1 << 18)(self._prefix_or_none)

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def _token(self, value: str) -> str:
        if self._key is None:
            return value
        return _token(self._key, value.encode("utf-8", "surrogatepass"))

    def prefix(self, value: str) -> str | None:
        net = network(value)
        if net is None or self._key is None:
            return net
        return self.token(net)

    def _prefix_or_none(self, value: str | None) -> str | None:
        return None if value is None else self.prefix(value)

    def apply(self, table: pa.Table, name: str) -> pa.Table:
        """Return `table` with its identifier and address columns pseudonymised."""
        if name in ADDRESSES:
            ip_col, prefix_col = ADDRESSES[name]
            ips = table.column(ip_col).to_pylist()
            given = table.column(prefix_col).to_pylist()
            sources = [ip if ip is not None else g for ip, g in zip(ips, given, strict=True)]
            table = _replace(table, prefix_col, [self._prefix_cached(v) for v in sources])
        for col in self._tokenised(name):
            values = table.column(col).to_pylist()
            table = _replace(table, col, [self.token(v) if v is not None else None for v in values])
        return table

    def apply_row(self, row: dict[str, Any], name: str) -> dict[str, Any]:
        """`apply` for one row, as a new dict: the gateway pseudonymises as it records,
        so that writing a file costs its event loop nothing in Python."""
        out = dict(row)
        if name in ADDRESSES:
            ip_col, prefix_col = ADDRESSES[name]
            source = out.get(ip_col)
            out[prefix_col] = self._prefix_cached(
                source if source is not None else out.get(prefix_col)
            )
        for col in self._tokenised(name):
            if out.get(col) is not None:
                out[col] = self.token(out[col])
        return out

    def _tokenised(self, name: str) -> tuple[str, ...]:
        if not self.enabled:
            return ()
        return (*IDENTIFIERS.get(name, ()), *(ADDRESSES[name][:1] if name in ADDRESSES else ()))


def _token(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:TOKEN_HEX]


def token(key: bytes, value: str) -> str:
    """A value's token under a key: whoever holds the key (a peer sharing it) compares
    tokens, no one else can read them."""
    return _token(key, value.encode())


def key_id(key: bytes) -> str:
    """Names a key without giving it away: a store's, or the one a peer's tokens are under."""
    return _token(key, b"distillguard-key-id")[:16]


def _replace(table: pa.Table, name: str, values: list[str | None]) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, table.schema.field(index), pa.array(values, pa.string()))
