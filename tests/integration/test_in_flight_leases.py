"""In-flight places per principal on the real DynamoDB API (moto): the cap holds, places free
themselves when their holder dies, and concurrent first calls do not refuse each other."""

from __future__ import annotations

from typing import Any

from bedrock_spend.aws.ledger import Ledger
from tests.conftest import USAGE_TABLE

PRINCIPAL = "User::ana"
TTL_MS = 60_000


def ledger(dynamodb: Any) -> Ledger:
    return Ledger(USAGE_TABLE, client=dynamodb)


def test_places_up_to_the_cap_then_refused_until_one_is_released(dynamodb: Any) -> None:
    book = ledger(dynamodb)
    taken = [book.acquire_lease(PRINCIPAL, f"l{i}", cap=3, now_ms=1_000, ttl_ms=TTL_MS) for i in range(4)]
    assert taken == [True, True, True, False]
    book.release_lease(PRINCIPAL, "l1")
    assert book.acquire_lease(PRINCIPAL, "l4", cap=3, now_ms=1_000, ttl_ms=TTL_MS)
    assert not book.acquire_lease(PRINCIPAL, "l5", cap=3, now_ms=1_000, ttl_ms=TTL_MS)


def test_an_expired_place_frees_itself(dynamodb: Any) -> None:
    book = ledger(dynamodb)
    assert book.acquire_lease(PRINCIPAL, "dead", cap=1, now_ms=1_000, ttl_ms=TTL_MS)
    assert not book.acquire_lease(PRINCIPAL, "next", cap=1, now_ms=1_000 + TTL_MS - 1, ttl_ms=TTL_MS)
    assert book.acquire_lease(PRINCIPAL, "next", cap=1, now_ms=1_000 + TTL_MS + 1, ttl_ms=TTL_MS)


def test_principals_have_places_of_their_own(dynamodb: Any) -> None:
    book = ledger(dynamodb)
    assert book.acquire_lease(PRINCIPAL, "a", cap=1, now_ms=0, ttl_ms=TTL_MS)
    assert book.acquire_lease("User::ben", "b", cap=1, now_ms=0, ttl_ms=TTL_MS)


def test_the_first_calls_of_a_principal_get_exactly_the_cap(dynamodb: Any) -> None:
    # One after another: moto applies a conditional write and its check non-atomically under
    # concurrent requests (DynamoDB does not); real concurrency is tested through the local
    # stack, whose moto serialises writes (tests/e2e/test_key_enforcement.py).
    book = ledger(dynamodb)
    results = [book.acquire_lease(PRINCIPAL, f"c{i}", cap=4, now_ms=0, ttl_ms=TTL_MS) for i in range(12)]
    assert results == [True] * 4 + [False] * 8
