import json

import pytest

from bedrock_spend.domain.errors import BadRequestError
from bedrock_spend.transport.invoke_request import parse_invoke_request

BODY = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10, "messages": []}


def test_minimal_request_parses_and_body_is_compact_json() -> None:
    request = parse_invoke_request(json.dumps({"modelId": "amazon.nova-micro-v1:0", "body": BODY}))
    assert request.model_id == "amazon.nova-micro-v1:0"
    assert json.loads(request.body) == BODY
    assert request.options == {}


def test_all_optional_invoke_model_parameters_are_passed_on() -> None:
    options = {
        "contentType": "application/json",
        "accept": "application/json",
        "trace": "ENABLED",
        "guardrailIdentifier": "gr123abc",
        "guardrailVersion": "DRAFT",
        "performanceConfigLatency": "optimized",
        "serviceTier": "flex",
    }
    request = parse_invoke_request(json.dumps({"modelId": "m.x", "body": BODY, **options}))
    assert request.options == options
    assert (request.service_tier, request.latency) == ("flex", "optimized")


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (None, "empty"),
        ("", "empty"),
        ("not json", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid UTF-8"),
        ('{"modelId": "m.x", "body": {"t": NaN}}', "NaN is not a JSON number"),
        ('{"modelId": "m.x", "body": {"t": 1e999}}', "out of range"),
        ('{"modelId": "m.x", "body": {"t": "\\udc00"}}', "unpaired UTF-16 surrogate"),
        ("[1, 2]", "must be a JSON object, got array"),
        ('"text"', "got string"),
        ("{}", "'modelId' is required"),
        ('{"modelId": 7, "body": {}}', "'modelId' must be a non-empty string, got number"),
        ('{"modelId": "", "body": {}}', "'modelId' must be a non-empty string"),
        ('{"modelId": "m.x"}', "'body' is required"),
        ('{"modelId": "m.x", "body": "hi"}', "'body' must be a JSON object, got string"),
        ('{"modelId": "m.x", "body": {}, "temperature": 1}', "unknown field(s): 'temperature'"),
        ('{"modelId": "m.x", "body": {}, "trace": "LOUD"}', "'trace' must be one of"),
        ('{"modelId": "m.x", "body": {}, "serviceTier": 3}', "'serviceTier' must be a non-empty string"),
        ('{"modelId": "m.x", "body": {}, "contentType": "text/plain"}', "'contentType' must be one of"),
        ('{"modelId": "m.x", "body": {}, "guardrailIdentifier": "g"}', "go together"),
        (
            '{"modelId": "m.x", "body": {}, "guardrailIdentifier": "Not Valid!", "guardrailVersion": "1"}',
            "not a valid guardrailIdentifier",
        ),
        (
            '{"modelId": "m.x", "body": {}, "guardrailIdentifier": "g", "guardrailVersion": "0"}',
            "guardrailVersion",
        ),
    ],
)
def test_bad_requests_name_the_problem(raw: str | bytes | None, fragment: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        parse_invoke_request(raw)
    assert fragment in caught.value.message
    assert caught.value.status == 400
