import pytest

from bedrock_spend import settings


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    settings.proxy_settings.cache_clear()
    settings.authorizer_settings.cache_clear()
    monkeypatch.setenv("AWS_REGION", "eu-west-2")


def test_authorizer_requires_its_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("API_KEY_TABLE", raising=False)
    with pytest.raises(settings.SettingsError, match="API_KEY_TABLE"):
        settings.authorizer_settings()


def test_proxy_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("UNPRICED_MODEL_POLICY", "BEDROCK_READ_TIMEOUT_SECONDS", "APP_PROFILE_MODELS"):
        monkeypatch.delenv(name, raising=False)
    config = settings.proxy_settings()
    assert config.region == "eu-west-2"
    assert config.unpriced_policy == "allow"
    assert (config.bedrock_connect_timeout + config.bedrock_read_timeout) * config.bedrock_max_attempts < 29


def test_timeouts_that_could_outlive_api_gateway_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEDROCK_READ_TIMEOUT_SECONDS", "20")
    monkeypatch.setenv("BEDROCK_MAX_ATTEMPTS", "2")
    with pytest.raises(settings.SettingsError, match="29"):
        settings.proxy_settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("UNPRICED_MODEL_POLICY", "maybe"),
        ("APP_PROFILE_MODELS", "[1]"),
        ("APP_PROFILE_MODELS", "{not json"),
        ("BEDROCK_MAX_ATTEMPTS", "two"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(settings.SettingsError, match=name):
        settings.proxy_settings()
