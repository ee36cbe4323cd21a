"""The authorizer's one piece of logic: token -> key record -> decision."""

from __future__ import annotations

from functools import cache

from bedrock_spend.aws.key_store import KeyStore
from bedrock_spend.domain.keys import Decision, Outcome, decide, hash_key, token_from_header, utcnow
from bedrock_spend.settings import authorizer_settings


@cache
def key_store() -> KeyStore:
    return KeyStore(authorizer_settings().api_key_table)


def authorize(authorization: str | None, store: KeyStore | None = None) -> Decision:
    token = token_from_header(authorization)
    if token is None:
        return Decision(False, Outcome.MALFORMED)
    record = (store or key_store()).get_by_hash(hash_key(token))
    return decide(record, utcnow())
