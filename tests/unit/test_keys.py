from datetime import UTC, datetime, timedelta
from decimal import Decimal

import keycove
import pytest

from bedrock_spend.domain.keys import (
    KEY_PREFIX,
    KeyRecord,
    decide,
    hash_key,
    mint_key,
    model_allowed,
    token_from_header,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def record(**overrides: object) -> KeyRecord:
    fields: dict[str, object] = {
        "key_hash": "h" * 64,
        "key_id": "kid_0a1b2c3d4e5f",
        "username": "alice",
        "created_at": NOW - timedelta(days=1),
    }
    fields.update(overrides)
    return KeyRecord(**fields)  # type: ignore[arg-type]


def test_minted_keys_are_prefixed_unique_and_accepted_as_tokens() -> None:
    keys = {mint_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert key.startswith(KEY_PREFIX)
        assert len(key) >= 40
        assert token_from_header(key) == key


@pytest.mark.parametrize("key", ["bsk_abc123", "x" * 40, mint_key()])
def test_hash_is_exactly_keycove_hash(key: str) -> None:
    assert hash_key(key) == keycove.hash(key)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bsk_" + "a" * 43, "bsk_" + "a" * 43),
        ("Bearer bsk_" + "a" * 43, "bsk_" + "a" * 43),
        ("bearer   bsk_" + "a" * 43, "bsk_" + "a" * 43),
        ("  Bearer bsk_" + "a" * 43 + "  ", "bsk_" + "a" * 43),
    ],
)
def test_token_from_header_accepts_raw_and_bearer(header: str, expected: str) -> None:
    assert token_from_header(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "Bearer",
        "Bearer ",
        "short",
        "Basic dXNlcjpwYXNz",
        "bsk_has space inside_000000000000",
        "bsk_" + "a" * 600,
        "bsk_\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9",
        "bsk_aaaaaaaaaaaaaaaaaaaa\x00",
        "Bearer Bearer bsk_aaaaaaaaaaaaaaaaaaaa",
    ],
)
def test_malformed_or_oversized_tokens_are_refused(header: str | None) -> None:
    assert token_from_header(header) is None


def test_unknown_key_is_denied() -> None:
    decision = decide(None, NOW)
    assert not decision.allow
    assert decision.reason == "unknown key"


def test_active_key_is_allowed_with_principal_and_context() -> None:
    decision = decide(record(team="search", monthly_budget_usd=Decimal("25.5")), NOW)
    assert decision.allow
    assert decision.principal_id == "User::alice"
    assert decision.context["keyId"] == "kid_0a1b2c3d4e5f"
    assert decision.context["username"] == "alice"
    assert decision.context["team"] == "search"
    assert decision.context["monthlyBudgetUsd"] == "25.5"
    assert all(isinstance(v, str | int | bool) for v in decision.context.values())


def test_revoked_key_is_denied() -> None:
    decision = decide(record(status="revoked"), NOW)
    assert (decision.allow, decision.reason) == (False, "revoked key")


def test_expired_key_is_denied_from_its_expiry_instant() -> None:
    assert decide(record(expires_at=NOW + timedelta(seconds=1)), NOW).allow
    decision = decide(record(expires_at=NOW), NOW)
    assert (decision.allow, decision.reason) == (False, "expired key")


@pytest.mark.parametrize(
    ("patterns", "ids", "allowed"),
    [
        ((), ("anything.model",), True),
        (("anthropic.*",), ("anthropic.claude-3-haiku-20240307-v1:0",), True),
        (
            ("anthropic.*",),
            ("eu.anthropic.claude-3-haiku-20240307-v1:0", "anthropic.claude-3-haiku-20240307-v1:0"),
            True,
        ),
        (("anthropic.*",), ("amazon.nova-pro-v1:0",), False),
        (("*nova-micro*", "meta.llama3*"), ("meta.llama3-1-8b-instruct-v1:0",), True),
        (("amazon.nova-pro-v1:0",), ("amazon.nova-pro-v1:0x",), False),
    ],
)
def test_model_allow_list_globs(patterns: tuple[str, ...], ids: tuple[str, ...], allowed: bool) -> None:
    assert model_allowed(patterns, *ids) is allowed
