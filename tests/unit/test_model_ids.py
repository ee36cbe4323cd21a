import pytest

from bedrock_spend.domain.model_ids import InvalidModelIdError, family, parse_model_id

ACCT = "123456789012"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"

# raw -> (kind, base_model, provider, scope, region, account, resource_id)
VALID = [
    (HAIKU, ("base", HAIKU, "anthropic", "in-region", None, None, None)),
    ("amazon.nova-pro-v1:0", ("base", "amazon.nova-pro-v1:0", "amazon", "in-region", None, None, None)),
    (
        "meta.llama3-1-70b-instruct-v1:0",
        ("base", "meta.llama3-1-70b-instruct-v1:0", "meta", "in-region", None, None, None),
    ),
    ("openai.gpt-oss-120b-1:0", ("base", "openai.gpt-oss-120b-1:0", "openai", "in-region", None, None, None)),
    ("cohere.embed-english-v3", ("base", "cohere.embed-english-v3", "cohere", "in-region", None, None, None)),
    ("amazon.titan-tg1-large", ("base", "amazon.titan-tg1-large", "amazon", "in-region", None, None, None)),
    (
        "anthropic.claude-instant-v1:2:100k",
        ("base", "anthropic.claude-instant-v1:2:100k", "anthropic", "in-region", None, None, None),
    ),
    (f"us.{HAIKU}", ("inference-profile", HAIKU, "anthropic", "us", None, None, None)),
    (f"eu.{HAIKU}", ("inference-profile", HAIKU, "anthropic", "eu", None, None, None)),
    (f"apac.{HAIKU}", ("inference-profile", HAIKU, "anthropic", "apac", None, None, None)),
    (
        "jp.amazon.nova-lite-v1:0",
        ("inference-profile", "amazon.nova-lite-v1:0", "amazon", "jp", None, None, None),
    ),
    (
        "au.amazon.nova-lite-v1:0",
        ("inference-profile", "amazon.nova-lite-v1:0", "amazon", "au", None, None, None),
    ),
    (
        "us-gov.anthropic.claude-3-5-sonnet-20240620-v1:0",
        (
            "inference-profile",
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
            "anthropic",
            "us-gov",
            None,
            None,
            None,
        ),
    ),
    (
        "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
        (
            "inference-profile",
            "anthropic.claude-sonnet-4-5-20250929-v1:0",
            "anthropic",
            "global",
            None,
            None,
            None,
        ),
    ),
    (
        f"arn:aws:bedrock:us-east-1::foundation-model/{HAIKU}",
        ("base", HAIKU, "anthropic", "in-region", "us-east-1", None, HAIKU),
    ),
    (
        f"arn:aws:bedrock:eu-west-1:{ACCT}:inference-profile/eu.{HAIKU}",
        ("inference-profile", HAIKU, "anthropic", "eu", "eu-west-1", ACCT, f"eu.{HAIKU}"),
    ),
    (
        f"arn:aws:bedrock:us-east-1:{ACCT}:application-inference-profile/a1b2c3d4e5f6",
        ("application-inference-profile", None, None, "unknown", "us-east-1", ACCT, "a1b2c3d4e5f6"),
    ),
    (
        f"arn:aws:bedrock:us-east-1:{ACCT}:provisioned-model/abcdef123456",
        ("provisioned", None, None, "in-region", "us-east-1", ACCT, "abcdef123456"),
    ),
    (
        f"arn:aws:bedrock:us-east-1:{ACCT}:custom-model/amazon.titan-text-express-v1/abcdef123456",
        ("custom", "amazon.titan-text-express-v1", "amazon", "in-region", "us-east-1", ACCT, "abcdef123456"),
    ),
    (
        f"arn:aws:bedrock:us-west-2:{ACCT}:custom-model-deployment/0a1b2c3d4e5f",
        ("custom", None, None, "in-region", "us-west-2", ACCT, "0a1b2c3d4e5f"),
    ),
    (
        f"arn:aws:bedrock:us-east-1:{ACCT}:imported-model/zyxwvu987654",
        ("imported", None, None, "in-region", "us-east-1", ACCT, "zyxwvu987654"),
    ),
    (
        f"arn:aws:bedrock:us-east-1:{ACCT}:prompt/PROMPT1234",
        ("prompt", None, None, "unknown", "us-east-1", ACCT, "PROMPT1234"),
    ),
    (
        f"arn:aws:bedrock:us-east-1:{ACCT}:prompt/PROMPT1234:12",
        ("prompt", None, None, "unknown", "us-east-1", ACCT, "PROMPT1234:12"),
    ),
    (
        f"arn:aws:bedrock:us-east-1:{ACCT}:prompt-router/my-router",
        ("prompt-router", None, None, "unknown", "us-east-1", ACCT, "my-router"),
    ),
    (
        f"arn:aws:bedrock:us-east-1:{ACCT}:default-prompt-router/anthropic.claude:1",
        ("prompt-router", None, None, "unknown", "us-east-1", ACCT, "anthropic.claude:1"),
    ),
    (
        f"arn:aws:sagemaker:us-east-1:{ACCT}:endpoint/my-endpoint-1",
        ("sagemaker", None, None, "in-region", "us-east-1", ACCT, "my-endpoint-1"),
    ),
    (
        f"arn:aws-us-gov:bedrock:us-gov-west-1:{ACCT}:inference-profile/us-gov.{HAIKU}",
        ("inference-profile", HAIKU, "anthropic", "us-gov", "us-gov-west-1", ACCT, f"us-gov.{HAIKU}"),
    ),
    (
        f"arn:aws-cn:bedrock:cn-north-1::foundation-model/{HAIKU}",
        ("base", HAIKU, "anthropic", "in-region", "cn-north-1", None, HAIKU),
    ),
]


@pytest.mark.parametrize(("raw", "expected"), VALID, ids=[raw[:60] for raw, _ in VALID])
def test_parse_model_id_accepts_every_form(raw: str, expected: tuple[str | None, ...]) -> None:
    ref = parse_model_id(raw)
    assert ref.raw == raw
    assert (
        ref.kind,
        ref.base_model,
        ref.provider,
        ref.scope,
        ref.region,
        ref.account,
        ref.resource_id,
    ) == expected


@pytest.mark.parametrize(
    ("raw", "fam"),
    [
        (HAIKU, "anthropic"),
        ("anthropic.claude-v2:1", "anthropic"),
        ("us.amazon.nova-pro-v1:0", "nova"),
        ("amazon.nova-micro-v1:0", "nova"),
        ("amazon.titan-text-express-v1", "titan-text"),
        ("amazon.titan-tg1-large", "titan-text"),
        ("amazon.titan-embed-text-v2:0", "titan-embed"),
        ("amazon.titan-image-generator-v2:0", "image"),
        ("amazon.nova-canvas-v1:0", "image"),
        ("stability.sd3-5-large-v1:0", "image"),
        ("stability.stable-diffusion-xl-v1", "image"),
        ("amazon.nova-reel-v1:1", "video"),
        ("meta.llama3-1-70b-instruct-v1:0", "llama"),
        ("mistral.mistral-large-2407-v1:0", "mistral"),
        ("cohere.command-r-plus-v1:0", "cohere-command"),
        ("cohere.embed-english-v3", "cohere-embed"),
        ("ai21.jamba-1-5-large-v1:0", "openai-style"),
        ("openai.gpt-oss-120b-1:0", "openai-style"),
        ("qwen.qwen3-32b-v1:0", "openai-style"),
        ("deepseek.v3-v1:0", "openai-style"),
        ("us.deepseek.r1-v1:0", "deepseek"),
        ("writer.palmyra-x5-v1:0", "unknown"),
        ("amazon.rerank-v1:0", "unknown"),
        (f"arn:aws:bedrock:us-east-1:{ACCT}:application-inference-profile/a1b2c3d4e5f6", "unknown"),
    ],
)
def test_family_maps_model_to_response_family(raw: str, fam: str) -> None:
    assert family(parse_model_id(raw)) == fam


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("a." + "b" * 2048, "longer than 2048"),
        ("anthropic.claude 3", "character outside"),
        ("anthropic.claude\t3", "character outside"),
        ("anthropic.claude\n", "character outside"),
        ("anthropic.claude\x00", "character outside"),
        ("anthropic.claude-3-haiku-20240307-v1%3A0", "percent-encoded"),
        ("anthropic.claude;rm", "character outside"),
        ("anthropic.clåude", "character outside"),
        ("claude-3-haiku", "provider"),
        ("anthropic.", "provider"),
        (".claude", "provider"),
        ("us.claude-3-haiku", "geo prefix"),
        (f"global.us.{HAIKU}", "geo prefix"),
        ("anthropic/claude", "not an ARN"),
        ("arn:aws:s3:::my-bucket", "well-formed"),
        (f"arn:aws:lambda:us-east-1:{ACCT}:function/my-fn", "neither Bedrock nor SageMaker"),
        (f"arn:aws:bedrock:us-east-1:{ACCT}:guardrail/abcdef123456", "unknown Bedrock resource type"),
        (f"arn:aws:bedrock:us-east-1:{ACCT}:foundation-model/{HAIKU}", "has no account"),
        (f"arn:aws:bedrock:us-east-1::foundation-model/us.{HAIKU}", "profile id"),
        ("arn:aws:bedrock:us-east-1::provisioned-model/abcdef123456", "12-digit account"),
        (f"arn:aws:bedrock:us-east-1:{ACCT}:inference-profile/{HAIKU}", "geo prefix"),
        (f"arn:aws:bedrock:us-east-1:{ACCT}:provisioned-model/short", "malformed provisioned-model"),
        (f"arn:aws:bedrock:us-east-1:{ACCT}:custom-model/abcdef123456", "custom-model"),
        (f"arn:aws:bedrock:us-east-1:{ACCT}:prompt/TOOSHORT", "malformed prompt"),
        (f"arn:aws:sagemaker:us-east-1:{ACCT}:model/my-model", "SageMaker endpoint"),
        ("arn:aws:bedrock:us-east-1:123:provisioned-model/abcdef123456", "well-formed"),
    ],
)
def test_parse_model_id_rejects(raw: str, reason: str) -> None:
    with pytest.raises(InvalidModelIdError, match=reason):
        parse_model_id(raw)


def test_invalid_model_id_error_is_a_value_error() -> None:
    assert issubclass(InvalidModelIdError, ValueError)


def test_rejection_message_never_echoes_more_than_100_chars_of_input() -> None:
    raw = "x" * 150 + " "
    with pytest.raises(InvalidModelIdError) as excinfo:
        parse_model_id(raw)
    assert "x" * 100 in str(excinfo.value)
    assert "x" * 101 not in str(excinfo.value)
