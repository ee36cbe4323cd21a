"""Hostile input, generated: at least 2,000 requests against the real authorizer and proxy.

Every answer is a well-formed JSON error naming the problem (or a model answer), never a
5xx or a stack trace; random and malformed tokens are never authorized. Examples are
derandomized so CI runs the same inputs every time.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bedrock_spend.authorizer import app as authorizer_app
from bedrock_spend.key_store import KeyStore
from bedrock_spend.keys import KeyRecord, hash_key, mint_key, utcnow
from bedrock_spend.proxy import app as proxy_app
from tests.conftest import KEY_TABLE, load_event
from tests.helpers import LambdaContext

pytestmark = pytest.mark.usefixtures("proxy_env")
FUZZ = settings(
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MODEL_IDS = st.one_of(
    st.sampled_from(
        [
            "anthropic.claude-3-haiku-20240307-v1:0",
            "eu.anthropic.claude-3-haiku-20240307-v1:0",
            "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-micro-v1:0",
            "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abcdef012345",
            "../../etc/passwd",
            "anthropic.claude%3A0",
            "",
            " ",
            "x" * 3000,
        ]
    ),
    st.text(max_size=80),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    ["modelId", "body", "contentType", "accept", "trace", "serviceTier", "guardrailVersion", "extra"]
)
REQUEST_OBJECTS = st.dictionaries(FIELDS, JSON_VALUES, max_size=5) | st.fixed_dictionaries(
    {"modelId": MODEL_IDS, "body": st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=3)}
)
RAW_BODIES = st.one_of(
    REQUEST_OBJECTS.map(json.dumps),
    JSON_VALUES.map(json.dumps),
    st.text(max_size=300),
    st.binary(max_size=300),
)


def assert_clean(response: dict[str, Any]) -> None:
    assert response["statusCode"] < 500, response["body"][:300]
    text = response["body"] or ""
    assert "Traceback" not in text and 'File "' not in text
    if response["statusCode"] >= 400:
        error = json.loads(text)["error"]
        assert error["type"] and error["message"]


def event_with_body(raw: str | bytes) -> dict[str, Any]:
    event = load_event("invoke_model")
    if isinstance(raw, bytes):
        event["body"], event["isBase64Encoded"] = base64.b64encode(raw).decode(), True
    else:
        event["body"] = raw
    return event


@settings(FUZZ, max_examples=900)
@given(raw=RAW_BODIES)
def test_invoke_model_bodies_never_5xx(raw: str | bytes) -> None:
    assert_clean(proxy_app.lambda_handler(event_with_body(raw), LambdaContext()))  # type: ignore[arg-type]


OPERATIONS = st.sampled_from(
    ["invoke", "converse", "invoke-with-response-stream", "converse-stream", "count-tokens", "delete", ""]
)


@settings(FUZZ, max_examples=700)
@given(model_id=MODEL_IDS, operation=OPERATIONS, encode=st.booleans(), body=RAW_BODIES)
def test_native_paths_and_bodies_never_5xx(
    model_id: str, operation: str, encode: bool, body: str | bytes
) -> None:
    event = event_with_body(body)
    segment = quote(model_id, safe="") if encode else model_id
    event["path"] = f"/model/{segment}/{operation}"
    event["resource"] = "/model/{proxy+}"
    event["pathParameters"] = {"proxy": f"{segment}/{operation}"}
    assert_clean(proxy_app.lambda_handler(event, LambdaContext()))  # type: ignore[arg-type]


TOKENS = st.one_of(
    st.text(max_size=200),
    st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=40, max_size=60
    ).map(lambda s: "bsk_" + s),
    st.text(max_size=60).map(lambda s: "Bearer " + s),
    st.text(max_size=20).map(lambda s: "Bearer bsk_" + s * 50),
)


@pytest.fixture
def real_key() -> str:
    key = mint_key()
    record = KeyRecord(
        key_hash=hash_key(key), key_id="kid_fuzz00000000", username="fuzz", created_at=utcnow()
    )
    KeyStore(KEY_TABLE).create(record)
    return key


@settings(FUZZ, max_examples=500)
@given(token=TOKENS)
def test_random_and_malformed_tokens_are_never_authorized(token: str, real_key: str) -> None:
    if real_key in token:
        return  # astronomically unlikely; a real key is allowed, as it should be
    event = load_event("authorizer_token")
    event["authorizationToken"] = token
    try:
        result = authorizer_app.lambda_handler(event, LambdaContext())  # type: ignore[arg-type]
    except Exception as exc:  # API Gateway's contract: raising "Unauthorized" is a 401
        assert str(exc) == "Unauthorized"
        return
    assert result["policyDocument"]["Statement"][0]["Effect"] == "Deny"


def test_an_oversized_authorization_header_is_refused_cleanly(real_key: str) -> None:
    event = load_event("authorizer_token")
    event["authorizationToken"] = "Bearer " + real_key + "x" * 16_000
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        authorizer_app.lambda_handler(event, LambdaContext())  # type: ignore[arg-type]


def test_an_oversized_body_is_a_clean_400() -> None:
    huge = json.dumps({"modelId": "x" * 5_000_000, "body": {}})
    response = proxy_app.lambda_handler(event_with_body(huge), LambdaContext())  # type: ignore[arg-type]
    assert_clean(response)
    assert response["statusCode"] == 400
