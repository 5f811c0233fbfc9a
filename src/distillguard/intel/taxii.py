"""Publishing bundles to, and pulling them from, a TAXII 2.1 collection.

A push goes in chunks of CHUNK objects; each chunk's status is read back, and the
report says exactly which objects the server took, which it refused (with its reason)
and which were never sent because an earlier chunk failed, so nothing is half-pushed
without saying so. A pull follows the server's pages and returns one bundle.

Some servers (medallion 3.0, the OASIS reference server among them) read an object's
`version` property as a timestamp when serving a collection, and fail on the
`extension-definition` object, whose `version` is the extension's version ("1.0").
`skip_definitions` leaves extension definitions out of a push; peers then take the
definition from its documentation (docs/intel.md), the extension's id being stable.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import requests
from taxii2client.exceptions import TAXIIServiceException
from taxii2client.v21 import Collection, as_pages

from distillguard.errors import RemoteError, UsageError

CHUNK = 500
PAGE = 200


@dataclass
class Pushed:
    sent: int = 0
    succeeded: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    pending: int = 0
    not_sent: int = 0
    skipped: list[str] = field(default_factory=list)


def push(
    bundle: dict[str, Any],
    url: str,
    user: str | None = None,
    password: str | None = None,
    skip_definitions: bool = False,
) -> Pushed:
    """Add the bundle's objects to the collection at `url`."""
    objects = bundle.get("objects", [])
    result = Pushed()
    if skip_definitions:
        result.skipped = [o["id"] for o in objects if o.get("type") == "extension-definition"]
        objects = [o for o in objects if o.get("type") != "extension-definition"]
    collection = _collection(url, user, password)
    for start in range(0, len(objects), CHUNK):
        chunk = objects[start : start + CHUNK]
        envelope = {"objects": chunk}
        try:
            status = collection.add_objects(envelope, wait_for_completion=True, timeout=60)
        except (requests.RequestException, TAXIIServiceException) as exc:
            result.not_sent = len(objects) - start
            raise RemoteError(_describe(exc, url) + _so_far(result)) from None
        result.sent += len(chunk)
        result.succeeded += [s["id"] if isinstance(s, dict) else str(s) for s in status.successes]
        result.failed += [(f.get("id", "?"), f.get("message", "")) for f in status.failures]
        result.pending += status.pending_count
    return result


def pull(
    url: str, user: str | None = None, password: str | None = None, added_after: str | None = None
) -> dict[str, Any]:
    """Every object of the collection at `url` (added after `added_after`), as a bundle."""
    collection = _collection(url, user, password)
    objects: list[dict[str, Any]] = []
    filters = {"added_after": added_after} if added_after else {}
    try:
        for envelope in as_pages(collection.get_objects, per_request=PAGE, **filters):
            objects += envelope.get("objects", [])
    except (requests.RequestException, TAXIIServiceException) as exc:
        raise RemoteError(_describe(exc, url)) from None
    return {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects}


def _collection(url: str, user: str | None, password: str | None) -> Collection:
    if not url.rstrip("/").split("/")[-2:-1] == ["collections"]:
        raise UsageError(f"{url}: not a TAXII collection URL (…/collections/<id>/)")
    try:
        collection = Collection(
            url if url.endswith("/") else url + "/", user=user, password=password
        )
        collection.refresh()
    except (requests.RequestException, TAXIIServiceException) as exc:
        raise RemoteError(_describe(exc, url)) from None
    return collection


def _describe(exc: Exception, url: str) -> str:
    response = getattr(exc, "response", None)
    if response is not None:
        return f"the TAXII server answered {response.status_code} {response.reason} for {url}"
    if isinstance(exc, requests.ConnectionError):
        return f"the TAXII server at {url} cannot be reached (is it running?)"
    return f"TAXII error from {url}: {exc}"


def _so_far(result: Pushed) -> str:
    return (
        f"; before that {len(result.succeeded)} objects were added and "
        f"{len(result.failed)} refused; {result.not_sent} were not sent"
    )
