"""Request bodies read as strict JSON: what the proxy forwards must be JSON Bedrock can parse.

Python's ``json`` is lenient where Bedrock is not: it accepts ``NaN``, ``Infinity`` and
numbers that overflow to ``inf`` (``1e999``), and escapes of lone surrogates (``"\\ud800"``),
none of which is valid JSON text (RFC 8259) or encodable as UTF-8. Each is refused here with
a 400 that names the problem, before Bedrock is called, instead of being forwarded or
failing later inside the proxy.
"""

from __future__ import annotations

import json
import math
from typing import Any

from bedrock_spend.domain.errors import BadRequestError


def _reject_constant(name: str) -> Any:
    raise BadRequestError(f"request body is not valid JSON: {name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRequestError(f"request body is not valid JSON: the number {text[:40]} is out of range")
    return value


def parse(raw: bytes | str) -> Any:
    """The JSON value of ``raw``; BadRequestError naming the problem if it is not strict JSON."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequestError(f"request body is not valid UTF-8 (byte {exc.start})") from exc
    try:
        value = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise BadRequestError(f"request body is not valid JSON: {str(exc)[:120]}") from exc
    try:
        # Lone surrogates decode from escapes but cannot be encoded again: Bedrock refuses them.
        dump(value)
    except UnicodeEncodeError as exc:
        raise BadRequestError(
            "request body is not valid JSON: it holds an unpaired UTF-16 surrogate"
        ) from exc
    return value


def parse_object(raw: bytes | str | None, what: str = "request body") -> dict[str, Any]:
    """Like :func:`parse`, for a body that must be a JSON object."""
    if raw is None or not raw.strip():
        raise BadRequestError(f"{what} is empty; expected a JSON object")
    value = parse(raw)
    if not isinstance(value, dict):
        raise BadRequestError(f"{what} must be a JSON object, got {type_name(value)}")
    return value


def dump(value: Any) -> bytes:
    """Compact UTF-8 JSON, as forwarded."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )
