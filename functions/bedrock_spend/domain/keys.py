"""API keys: minting, hashing, key records and the pure allow/deny decision.

A key is ``bsk_`` + a keycove token. The prefix makes leaked keys easy for secret scanners
to find; the secret part is 32 random bytes. Only ``hash_key(key)`` is ever stored.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Literal

KEY_PREFIX = "bsk_"
# Tokens are URL-safe base64 plus the prefix; anything else cannot be one of our keys, so
# it is refused before the table is read (cheap, and no odd bytes reach DynamoDB).
_TOKEN_RE = re.compile(r"[A-Za-z0-9_\-]{16,256}")
_BEARER_RE = re.compile(r"bearer[ \t]+", re.IGNORECASE)

KeyStatus = Literal["active", "revoked"]


def mint_key() -> str:
    """A new secret key. Shown once to its owner; never stored or logged."""
    from keycove import generate_token  # CLI-only: keeps `cryptography` out of the Lambdas

    token: str = generate_token(32)
    return KEY_PREFIX + token


def new_key_id() -> str:
    """A short, non-secret id to name a key in the CLI, logs and reports."""
    return "kid_" + secrets.token_hex(6)


def hash_key(key: str) -> str:
    """SHA-256 hex of the key: byte-for-byte what ``keycove.hash`` computes.

    Computed with hashlib so the authorizer does not import keycove (and `cryptography`)
    on its cold-start path; a unit test pins the equality with keycove.
    """
    return hashlib.sha256(key.encode()).hexdigest()


def token_from_header(header: str | None) -> str | None:
    """The key in an Authorization header value (raw or ``Bearer <key>``), or None if malformed."""
    if not header or len(header) > 512:
        return None
    value = header.strip()
    match = _BEARER_RE.match(value)
    if match:
        value = value[match.end() :]
    return value if _TOKEN_RE.fullmatch(value) else None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_hash: str
    key_id: str
    username: str
    created_at: datetime
    status: KeyStatus = "active"
    team: str | None = None
    expires_at: datetime | None = None
    monthly_budget_usd: Decimal | None = None
    allowed_models: tuple[str, ...] = ()
    # Calls this key may have in flight at once; None: the deployment's default.
    max_in_flight: int | None = None
    description: str = ""
    revoked_at: datetime | None = None
    replaced_by: str | None = None  # key id of the key that rotated this one

    @property
    def principal_id(self) -> str:
        return principal_for(self.username)

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def revoke(self, now: datetime) -> KeyRecord:
        return replace(self, status="revoked", revoked_at=now)


def principal_for(username: str) -> str:
    return f"User::{username}"


def model_allowed(patterns: tuple[str, ...] | list[str], *model_ids: str | None) -> bool:
    """True when no allow-list is set or any of the ids matches any glob pattern."""
    if not patterns:
        return True
    return any(fnmatchcase(model_id, pattern) for pattern in patterns for model_id in model_ids if model_id)


class Outcome(StrEnum):
    """Why a key was allowed or denied; the value is the ``Reason`` the denial metric carries."""

    OK = "ok"
    MALFORMED = "missing or malformed key"
    UNKNOWN = "unknown key"
    REVOKED = "revoked key"
    EXPIRED = "expired key"

    @property
    def unauthenticated(self) -> bool:
        """No key we know: API Gateway answers 401 (the other denials are 403)."""
        return self in (Outcome.MALFORMED, Outcome.UNKNOWN)


@dataclass(frozen=True, slots=True)
class Decision:
    allow: bool
    reason: Outcome
    principal_id: str = "anonymous"
    # Authorizer context values must be scalars (API Gateway rejects objects and arrays).
    context: dict[str, str | int | bool] = field(default_factory=dict)


def decide(record: KeyRecord | None, now: datetime) -> Decision:
    """Allow or deny a request for the key record its token hashed to (None: unknown key)."""
    if record is None:
        return Decision(False, Outcome.UNKNOWN)
    if record.status != "active":
        return Decision(False, Outcome.REVOKED, record.principal_id)
    if record.is_expired(now):
        return Decision(False, Outcome.EXPIRED, record.principal_id)
    context: dict[str, str | int | bool] = {
        "keyId": record.key_id,
        "username": record.username,
        "team": record.team or "",
        "allowedModels": ",".join(record.allowed_models),
        "monthlyBudgetUsd": "" if record.monthly_budget_usd is None else str(record.monthly_budget_usd),
        "maxInFlight": "" if record.max_in_flight is None else str(record.max_in_flight),
    }
    return Decision(True, Outcome.OK, record.principal_id, context)


def utcnow() -> datetime:
    return datetime.now(UTC)
