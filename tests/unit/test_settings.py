import pytest

from bedrock_spend import settings


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    settings.authorizer_settings.cache_clear()
    monkeypatch.setenv("AWS_REGION", "eu-west-2")
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"):
        monkeypatch.delenv(name, raising=False)


def test_authorizer_requires_its_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("API_KEY_TABLE", raising=False)
    with pytest.raises(settings.SettingsError, match="API_KEY_TABLE"):
        settings.authorizer_settings()


def test_proxy_defaults_allow_calls_as_long_as_api_gateway_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "UNPRICED_MODEL_POLICY",
        "MAX_CALL_SECONDS",
        "FUNCTION_TIMEOUT_SECONDS",
        "APP_PROFILE_MODELS",
    ):
        monkeypatch.delenv(name, raising=False)
    config = settings.proxy_settings()
    assert config.region == "eu-west-2"
    assert config.bedrock_endpoint == "https://bedrock-runtime.eu-west-2.amazonaws.com"
    assert config.unpriced_policy == "allow"
    # Far past the old 29 s ceiling, and still inside API Gateway's 15 minutes with room to record.
    assert config.max_call_seconds >= 600
    assert config.max_call_seconds + settings.RECORD_SECONDS <= config.function_timeout <= 900
    assert config.bedrock_idle_timeout == 300


def test_the_endpoint_variable_points_the_proxy_at_another_bedrock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "https://127.0.0.1:8443/")
    assert settings.proxy_settings().bedrock_endpoint == "https://127.0.0.1:8443"


def test_a_call_that_could_outlive_the_function_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUNCTION_TIMEOUT_SECONDS", "600")
    monkeypatch.setenv("MAX_CALL_SECONDS", "590")
    with pytest.raises(settings.SettingsError, match="MAX_CALL_SECONDS"):
        settings.proxy_settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("UNPRICED_MODEL_POLICY", "maybe"),
        ("APP_PROFILE_MODELS", "[1]"),
        ("APP_PROFILE_MODELS", "{not json"),
        ("MAX_CALL_SECONDS", "long"),
        ("USAGE_RECORD_TTL_DAYS", "forever"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(settings.SettingsError, match=name):
        settings.proxy_settings()
