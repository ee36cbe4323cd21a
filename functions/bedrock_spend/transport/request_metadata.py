"""Bedrock request metadata that names the consumer, so Bedrock's own invocation logs can be
reconciled with the ledger per principal and key.

The proxy's entries (``principalId``, ``keyId``) are merged over whatever the client sent:
a caller keeps its own entries but cannot pose as someone else. Bedrock's limits are
checked before Bedrock is called: Converse's ``requestMetadata`` map has 1-16 entries, keys
of 1-256 and values of 0-256 characters from ``[a-zA-Z0-9\\s:_@$#=/+,-.]``; InvokeModel's
``X-Amzn-Bedrock-Request-Metadata`` header is that map as a JSON string of at most 8,500
characters (Amazon Bedrock API Reference, "Converse" and "InvokeModel":
https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html and
https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_InvokeModel.html; the same
limits are in botocore's bedrock-runtime service model). The entry limits are applied to the
header too: it is the same metadata, filtered the same way in the invocation logs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from bedrock_spend.domain.errors import BadRequestError
from bedrock_spend.domain.usage_record import Caller

MAX_ENTRIES = 16
MAX_KEY_LENGTH = 256
MAX_VALUE_LENGTH = 256
MAX_HEADER_LENGTH = 8_500
_CHARACTERS = re.compile(r"[a-zA-Z0-9\s:_@$#=/+,.-]*")


def ours(caller: Caller) -> dict[str, str]:
    return {"principalId": caller.principal_id, "keyId": caller.key_id}


def merged(client: object, caller: Caller) -> dict[str, str]:
    """The client's map (or None) with the proxy's entries over it, within Bedrock's limits."""
    if client is None:
        client = {}
    if not isinstance(client, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in client.items()
    ):
        raise BadRequestError("requestMetadata must be a map of strings to strings")
    result = {**client, **ours(caller)}
    _check(result)
    return result


def merged_header(raw: str | None, caller: Caller) -> str:
    """The X-Amzn-Bedrock-Request-Metadata value: the client's JSON map merged with ours."""
    client: object = None
    if raw is not None and raw.strip():
        try:
            client = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise BadRequestError("X-Amzn-Bedrock-Request-Metadata must be a JSON object") from exc
        if not isinstance(client, dict):
            raise BadRequestError("X-Amzn-Bedrock-Request-Metadata must be a JSON object")
    value = json.dumps(merged(client, caller), separators=(",", ":"))
    if len(value) > MAX_HEADER_LENGTH:
        raise BadRequestError(
            f"request metadata is {len(value)} characters as JSON with the proxy's "
            f"principalId and keyId; Bedrock allows {MAX_HEADER_LENGTH}"
        )
    return value


def _check(entries: Mapping[str, str]) -> None:
    if len(entries) > MAX_ENTRIES:
        raise BadRequestError(
            f"request metadata has {len(entries)} entries with the proxy's principalId and keyId; "
            f"Bedrock allows {MAX_ENTRIES}"
        )
    for key, value in entries.items():
        if not 1 <= len(key) <= MAX_KEY_LENGTH:
            raise BadRequestError(f"request metadata keys must be 1-{MAX_KEY_LENGTH} characters")
        if len(value) > MAX_VALUE_LENGTH:
            raise BadRequestError(
                f"request metadata value of {key[:40]!r} is longer than {MAX_VALUE_LENGTH} characters"
            )
        if not (_CHARACTERS.fullmatch(key) and _CHARACTERS.fullmatch(value)):
            raise BadRequestError(
                f"request metadata entry {key[:40]!r} has a character outside [a-zA-Z0-9 :_@$#=/+,-.]"
            )
