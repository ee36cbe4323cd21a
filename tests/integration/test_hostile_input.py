"""Hostile input, generated, against the real authorizer and proxy app.

Every answer is a well-formed JSON error naming the problem (the proxy's own, or Bedrock's
relayed unchanged) or a model answer, never a 5xx or a stack trace; random and malformed
tokens are never authorized. Input that is not strict JSON (invalid UTF-8, lone surrogates,
NaN/Infinity, numbers out of range) or not a JSON object is refused with a 400 naming the
problem on every route, before Bedrock is called. Example counts are kept small so the
default suite stays fast (tests/fuzz runs thousands through the local stack); examples are
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
from bedrock_spend.aws.key_store import KeyStore
from bedrock_spend.domain.keys import KeyRecord, hash_key, mint_key, utcnow
from tests import proxy_client
from tests.conftest import KEY_TABLE, load_event
from tests.helpers import BedrockTraffic, LambdaContext, header, spy_on_bedrock

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
        body = json.loads(text)
        assert body["message"]
        error_type = str(header(response, "x-amzn-errortype"))
        if ":" not in error_type:  # the proxy's own error; Bedrock's ("Name:namespace") are relayed
            assert body["error"]["type"] == error_type and body["error"]["message"]


def event_with_body(raw: str | bytes) -> dict[str, Any]:
    event = load_event("invoke_model")
    if isinstance(raw, bytes):
        event["body"], event["isBase64Encoded"] = base64.b64encode(raw).decode(), True
    else:
        event["body"] = raw
    return event


@settings(FUZZ, max_examples=60)
@given(raw=RAW_BODIES)
def test_invoke_model_bodies_never_5xx(raw: str | bytes) -> None:
    assert_clean(proxy_client.invoke(event_with_body(raw)))


OPERATIONS = st.sampled_from(
    ["invoke", "converse", "invoke-with-response-stream", "converse-stream", "count-tokens", "delete", ""]
)


@settings(FUZZ, max_examples=70)
@given(model_id=MODEL_IDS, operation=OPERATIONS, encode=st.booleans(), body=RAW_BODIES)
def test_native_paths_and_bodies_never_5xx(
    model_id: str, operation: str, encode: bool, body: str | bytes
) -> None:
    event = event_with_body(body)
    # Either as SDKs send it, or with everything a URL path may hold left as it is (characters
    # an HTTP request line cannot carry, such as controls, spaces and "?", stay escaped).
    segment = quote(model_id, safe="" if encode else "/:@!$&'()*+,;=%")
    event["path"] = f"/model/{segment}/{operation}"
    event["resource"] = "/model/{proxy+}"
    event["pathParameters"] = {"proxy": f"{segment}/{operation}"}
    assert_clean(proxy_client.invoke(event))


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


@settings(FUZZ, max_examples=50)
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
    response = proxy_client.invoke(event_with_body(huge))
    assert_clean(response)
    assert response["statusCode"] == 400


# --- input that is not strict JSON, or not a JSON object: a 400 on every route, before Bedrock ---

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
ROUTES = (
    "invoke-model",
    "invoke",
    "invoke-with-response-stream",
    "converse",
    "converse-stream",
    "count-tokens",
)
ASCII = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", max_size=8)
# Byte sequences no UTF-8 decoder may accept: stray continuation bytes, bytes never used,
# overlong forms, encoded surrogates, code points past U+10FFFF, a sequence cut short.
INVALID_UTF8 = [
    b"\x80",
    b"\xbf",
    b"\xff",
    b"\xfe",
    b"\xc0\xaf",
    b"\xc1\xbf",
    b"\xe0\x80\xaf",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xf4\x90\x80\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\xc3",
    b"\xe2\x82",
]


@st.composite
def lone_surrogates(draw: st.DrawFn) -> bytes:
    """A JSON string whose escapes hold an unpaired UTF-16 surrogate (valid JSON syntax)."""
    if draw(st.booleans()):
        escape = f"\\u{draw(st.integers(0xD800, 0xDBFF)):04x}"  # high, nothing after it
        tail = draw(ASCII)
    else:
        escape = f"\\u{draw(st.integers(0xDC00, 0xDFFF)):04x}"  # low, nothing before it
        tail = draw(ASCII | st.just("\\u0041"))
    return f'"{draw(ASCII)}{escape}{tail}"'.encode()


@st.composite
def invalid_utf8(draw: st.DrawFn) -> bytes:
    """A JSON string holding bytes that are not UTF-8."""
    bad = draw(st.sampled_from(INVALID_UTF8) | st.binary(min_size=1, max_size=3).map(lambda b: b"\xff" + b))
    return b'"' + draw(ASCII).encode() + bad + draw(ASCII).encode() + b'"'


# Ordinary JSON around the hostile part: finite numbers only, text without surrogates.
STRICT_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
NON_NUMBERS = st.sampled_from([b"NaN", b"Infinity", b"-Infinity"])
OVERFLOWS = st.builds(
    lambda sign, digits, fraction, e, exponent: b"%s%d%s%s%d" % (sign, digits, fraction, e, exponent),
    st.sampled_from([b"", b"-"]),
    st.integers(1, 999),
    st.sampled_from([b"", b".5", b".0"]),
    st.sampled_from([b"e", b"E", b"e+", b"E+"]),
    st.integers(309, 100_000),
)
# Each kind of hostile JSON value, and a fragment of the 400's message naming it.
HOSTILE_VALUES = (
    lone_surrogates().map(lambda v: (v, "unpaired UTF-16 surrogate")),
    invalid_utf8().map(lambda v: (v, "not valid UTF-8")),
    NON_NUMBERS.map(lambda v: (v, "is not a JSON number")),
    OVERFLOWS.map(lambda v: (v, "out of range")),
)
NON_OBJECTS = STRICT_JSON.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode())


@st.composite
def nested(draw: st.DrawFn, value: bytes) -> bytes:
    """``value`` somewhere inside arrays and objects, among ordinary members."""
    for _ in range(draw(st.integers(0, 3))):
        siblings = json.dumps(draw(st.lists(STRICT_JSON, max_size=2))).encode()[1:-1]
        if draw(st.booleans()):
            value = b"[" + (siblings + b"," if siblings else b"") + value + b"]"
        else:
            value = b'{"' + draw(ASCII).encode() + b'":' + value + b"}"
    return value


@st.composite
def hostile_objects(draw: st.DrawFn, values: st.SearchStrategy[tuple[bytes, str]]) -> tuple[bytes, str]:
    """A JSON object text with one hostile value (or key) among ordinary members."""
    value, fragment = draw(values)
    if fragment in ("unpaired UTF-16 surrogate", "not valid UTF-8") and draw(st.booleans()):
        member = value + b":1"  # the key itself
    else:
        member = b'"' + draw(ASCII).encode() + b'":' + draw(nested(value))
    others = json.dumps(draw(st.dictionaries(ASCII, STRICT_JSON, max_size=3))).encode()[1:-1]
    parts = [member, others] if draw(st.booleans()) else [others, member]
    return b"{" + b",".join(p for p in parts if p) + b"}", fragment


HOSTILE_BODIES = st.one_of(
    *(hostile_objects(values) for values in HOSTILE_VALUES),
    NON_OBJECTS.map(lambda v: (v, "must be a JSON object")),
)


def route_event(route: str, body: bytes, *, as_member: bool) -> dict[str, Any]:
    """POST ``body`` on ``route``; on /invoke-model either as the whole body or as its "body"."""
    if route == "invoke-model":
        event = load_event("invoke_model")
        if as_member:
            body = b'{"modelId":"' + HAIKU.encode() + b'","body":' + body + b"}"
    else:
        event = load_event("converse" if route.startswith("converse") else "native_invoke")
        path = f"/model/{quote(HAIKU, safe='')}/{route}"
        event["path"] = path
        event["pathParameters"] = {"proxy": path.removeprefix("/model/")}
    event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
    return event


def assert_refused(response: dict[str, Any], fragment: str, traffic: BedrockTraffic) -> None:
    assert response["statusCode"] == 400, response["body"][:300]
    assert header(response, "Content-Type") == "application/json"
    assert header(response, "x-amzn-errortype") == "ValidationException"
    body = json.loads(response["body"])
    assert body["error"] == {"type": "ValidationException", "message": body["message"]}
    assert fragment in body["message"], body["message"]
    assert traffic.requests == []  # Bedrock never saw it


@pytest.fixture
def bedrock_traffic(monkeypatch: pytest.MonkeyPatch) -> BedrockTraffic:
    return spy_on_bedrock(monkeypatch)


EXAMPLES = {
    "lone high surrogate": (b'{"prompt":"abc\\ud83dxyz"}', "unpaired UTF-16 surrogate"),
    "lone low surrogate in a key": (b'{"a":[{"\\udc00":1}]}', "unpaired UTF-16 surrogate"),
    "encoded surrogate": (b'{"text":"\xed\xa0\x80"}', "not valid UTF-8"),
    "overlong UTF-8": (b'{"text":"\xc0\xaf"}', "not valid UTF-8"),
    "Latin-1 byte": (b'{"text":"caf\xe9"}', "not valid UTF-8"),
    "NaN": (b'{"temperature":NaN}', "NaN is not a JSON number"),
    "Infinity": (b'{"top_p":[1,-Infinity]}', "Infinity is not a JSON number"),
    "1e999": (b'{"max_tokens":1e999}', "the number 1e999 is out of range"),
    "array": (b"[1,2]", "must be a JSON object, got array"),
    "string": (b'"hello"', "must be a JSON object, got string"),
    "null": (b"null", "must be a JSON object, got null"),
    "number": (b"42", "must be a JSON object, got number"),
}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_each_kind_of_hostile_body_is_a_400_naming_it_on_every_route(
    route: str, example: str, emulator: Any, bedrock_traffic: BedrockTraffic
) -> None:
    body, fragment = EXAMPLES[example]
    for as_member in (False, True) if route == "invoke-model" else (False,):
        response = proxy_client.invoke(route_event(route, body, as_member=as_member))
        assert_refused(response, fragment, bedrock_traffic)
    assert emulator.billed() == []


@settings(FUZZ, max_examples=100)
@given(route=st.sampled_from(ROUTES), hostile=HOSTILE_BODIES, as_member=st.booleans())
def test_generated_hostile_bodies_are_a_400_naming_the_problem_before_bedrock(
    route: str, hostile: tuple[bytes, str], as_member: bool, bedrock_traffic: BedrockTraffic
) -> None:
    body, fragment = hostile
    assert_refused(
        proxy_client.invoke(route_event(route, body, as_member=as_member)), fragment, bedrock_traffic
    )
