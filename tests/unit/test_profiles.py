"""Application inference profiles resolved to their base model: static mapping, the Bedrock
control plane behind a botocore Stubber, caching and expiry."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from bedrock_spend.aws.profiles import FAILURE_TTL_SECONDS, ProfileResolver
from bedrock_spend.domain.model_ids import ModelRef

ACCOUNT = "123456789012"
PROFILE_ARN = f"arn:aws:bedrock:us-east-1:{ACCOUNT}:application-inference-profile/a1b2c3d4e5f6"
HAIKU_3 = "anthropic.claude-3-haiku-20240307-v1:0"
SONNET_45 = "anthropic.claude-sonnet-4-5-20250929-v1:0"


def app_profile(arn: str = PROFILE_ARN) -> ModelRef:
    return ModelRef(
        arn, "application-inference-profile", None, None, "unknown", "us-east-1", ACCOUNT, "a1b2c3d4e5f6"
    )


def fm(model_id: str, region: str) -> str:
    return f"arn:aws:bedrock:{region}::foundation-model/{model_id}"


def profile_response(*model_arns: str) -> dict[str, Any]:
    return {
        "inferenceProfileName": "team-a",
        "inferenceProfileArn": PROFILE_ARN,
        "inferenceProfileId": "a1b2c3d4e5f6",
        "models": [{"modelArn": arn} for arn in model_arns],
        "status": "ACTIVE",
        "type": "APPLICATION",
    }


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def bedrock(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Stubber]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = boto3.client("bedrock", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield client, stubber


def expect_lookup(stubber: Stubber, *model_arns: str) -> None:
    stubber.add_response(
        "get_inference_profile",
        profile_response(*model_arns),
        {"inferenceProfileIdentifier": PROFILE_ARN},
    )


class CountingFactory:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.client


# --- static mapping ---


@pytest.mark.parametrize(
    ("target", "base", "scope"),
    [
        (HAIKU_3, HAIKU_3, "in-region"),
        (f"us.{SONNET_45}", SONNET_45, "us"),
        (f"global.{SONNET_45}", SONNET_45, "global"),
        (f"eu.{HAIKU_3}", HAIKU_3, "eu"),
        (fm(HAIKU_3, "us-east-1"), HAIKU_3, "in-region"),
    ],
)
def test_static_mapping_resolves_without_calling_bedrock(target: str, base: str, scope: str) -> None:
    def no_client() -> Any:
        raise AssertionError("the static mapping must not create a client")

    resolver = ProfileResolver(static={PROFILE_ARN: target}, client_factory=no_client)

    resolved = resolver.resolve(app_profile())

    assert (resolved.base_model, resolved.provider, resolved.scope) == (base, "anthropic", scope)
    assert resolved.kind == "application-inference-profile"
    assert resolved.raw == PROFILE_ARN


def test_other_refs_pass_through_untouched() -> None:
    resolver = ProfileResolver(client_factory=lambda: pytest.fail("no lookup expected"))
    base = ModelRef(HAIKU_3, "base", HAIKU_3, "anthropic", "in-region")
    provisioned = ModelRef("arn:p", "provisioned", None, None, "in-region")

    assert resolver.resolve(base) is base
    assert resolver.resolve(provisioned) is provisioned


def test_client_is_created_lazily() -> None:
    factory = CountingFactory(None)

    ProfileResolver(client_factory=factory)

    assert factory.calls == 0


# --- the control plane ---


def test_profile_of_a_foundation_model_is_in_region(bedrock: tuple[Any, Stubber]) -> None:
    client, stubber = bedrock
    expect_lookup(stubber, fm(HAIKU_3, "us-east-1"))

    resolved = ProfileResolver(client_factory=lambda: client).resolve(app_profile())

    assert (resolved.base_model, resolved.provider, resolved.scope) == (HAIKU_3, "anthropic", "in-region")
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("regions", "scope"),
    [
        (("us-east-1", "us-east-2", "us-west-2"), "us"),
        (("eu-central-1", "eu-west-1", "eu-west-3"), "eu"),
        (("ap-northeast-1", "ap-northeast-3"), "jp"),
        (("ap-northeast-1", "ap-south-1", "ap-southeast-2"), "apac"),
        (("us-east-1", "eu-west-1", "ap-northeast-1"), "global"),
    ],
)
def test_profile_copying_a_system_profile_takes_its_geo(
    bedrock: tuple[Any, Stubber], regions: tuple[str, ...], scope: str
) -> None:
    client, stubber = bedrock
    expect_lookup(stubber, *(fm(SONNET_45, r) for r in regions))

    resolved = ProfileResolver(client_factory=lambda: client).resolve(app_profile())

    assert (resolved.base_model, resolved.scope) == (SONNET_45, scope)


def test_error_leaves_the_ref_unchanged(bedrock: tuple[Any, Stubber]) -> None:
    client, stubber = bedrock
    stubber.add_client_error(
        "get_inference_profile", service_error_code="ResourceNotFoundException", http_status_code=404
    )
    ref = app_profile()

    resolved = ProfileResolver(client_factory=lambda: client).resolve(ref)

    assert resolved == ref
    stubber.assert_no_pending_responses()


def test_profile_with_two_different_models_is_left_unresolved(bedrock: tuple[Any, Stubber]) -> None:
    client, stubber = bedrock
    expect_lookup(stubber, fm(HAIKU_3, "us-east-1"), fm(SONNET_45, "us-east-1"))
    ref = app_profile()

    assert ProfileResolver(client_factory=lambda: client).resolve(ref) == ref


def test_a_failing_client_factory_never_raises() -> None:
    def broken() -> Any:
        raise RuntimeError("no region configured")

    ref = app_profile()

    assert ProfileResolver(client_factory=broken).resolve(ref) == ref


# --- caching ---


def test_second_resolve_makes_no_api_call(bedrock: tuple[Any, Stubber]) -> None:
    client, stubber = bedrock
    expect_lookup(stubber, fm(HAIKU_3, "us-east-1"))
    factory = CountingFactory(client)
    resolver = ProfileResolver(client_factory=factory)

    first = resolver.resolve(app_profile())
    second = resolver.resolve(app_profile())  # a second API call would find no stubbed response

    assert first == second
    assert second.base_model == HAIKU_3
    assert factory.calls == 1
    stubber.assert_no_pending_responses()


def test_cached_answer_expires_after_the_ttl(bedrock: tuple[Any, Stubber]) -> None:
    client, stubber = bedrock
    expect_lookup(stubber, fm(HAIKU_3, "us-east-1"))
    expect_lookup(stubber, fm(SONNET_45, "us-east-1"))  # the profile was re-pointed
    clock = FakeClock()
    resolver = ProfileResolver(client_factory=lambda: client, ttl_seconds=600, clock=clock)

    assert resolver.resolve(app_profile()).base_model == HAIKU_3
    clock.now += 599
    assert resolver.resolve(app_profile()).base_model == HAIKU_3
    clock.now += 1
    assert resolver.resolve(app_profile()).base_model == SONNET_45
    stubber.assert_no_pending_responses()


def test_failures_are_retried_after_a_short_while(bedrock: tuple[Any, Stubber]) -> None:
    client, stubber = bedrock
    stubber.add_client_error(
        "get_inference_profile", service_error_code="ThrottlingException", http_status_code=429
    )
    expect_lookup(stubber, fm(HAIKU_3, "us-east-1"))
    clock = FakeClock()
    resolver = ProfileResolver(client_factory=lambda: client, clock=clock)

    assert resolver.resolve(app_profile()).base_model is None
    clock.now += FAILURE_TTL_SECONDS - 1
    assert resolver.resolve(app_profile()).base_model is None  # no second call yet
    clock.now += 1
    assert resolver.resolve(app_profile()).base_model == HAIKU_3
    stubber.assert_no_pending_responses()
