"""Typed settings read from the environment once per process.

Required values have no default, so a typo in template.yaml fails on the first call with
a message naming the variable instead of misbehaving later.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from typing import Literal

# API Gateway REST integrations time out at 29 s; a Bedrock call (connect + read, over
# every attempt) must end before that so the caller gets our JSON error, not API
# Gateway's bare 504, and the Lambda is still alive to record usage.
API_GATEWAY_TIMEOUT_SECONDS = 29.0


class SettingsError(RuntimeError):
    pass


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise SettingsError(f"environment variable {name} is required")
    return value


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        return float(raw) if raw else default
    except ValueError as exc:
        raise SettingsError(f"environment variable {name} must be a number, got {raw!r}") from exc


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    try:
        return int(raw) if raw else default
    except ValueError as exc:
        raise SettingsError(f"environment variable {name} must be an integer, got {raw!r}") from exc


@dataclass(frozen=True, slots=True)
class AuthorizerSettings:
    api_key_table: str


@dataclass(frozen=True, slots=True)
class ProxySettings:
    region: str
    usage_table: str | None
    unpriced_policy: Literal["allow", "deny"] = "allow"
    bedrock_connect_timeout: float = 2.0
    bedrock_read_timeout: float = 26.0
    bedrock_max_attempts: int = 1
    usage_record_ttl_days: int = 400
    budget_soft_threshold: Decimal = Decimal("0.8")
    # Application inference profile ARN -> base model id, for offline pricing.
    app_profile_models: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        worst_case = (self.bedrock_connect_timeout + self.bedrock_read_timeout) * self.bedrock_max_attempts
        if worst_case >= API_GATEWAY_TIMEOUT_SECONDS:
            raise SettingsError(
                f"Bedrock timeouts allow {worst_case:.1f} s per call; keep (connect + read) x attempts "
                f"under API Gateway's {API_GATEWAY_TIMEOUT_SECONDS:.0f} s"
            )
        if self.bedrock_max_attempts < 1:
            raise SettingsError("BEDROCK_MAX_ATTEMPTS must be at least 1")


@cache
def authorizer_settings() -> AuthorizerSettings:
    return AuthorizerSettings(api_key_table=_required("API_KEY_TABLE"))


@cache
def proxy_settings() -> ProxySettings:
    policy = os.environ.get("UNPRICED_MODEL_POLICY", "allow").strip().lower() or "allow"
    if policy not in ("allow", "deny"):
        raise SettingsError(f"UNPRICED_MODEL_POLICY must be 'allow' or 'deny', got {policy!r}")
    raw_profiles = os.environ.get("APP_PROFILE_MODELS", "").strip() or "{}"
    try:
        profiles = json.loads(raw_profiles)
    except ValueError as exc:
        raise SettingsError("APP_PROFILE_MODELS must be a JSON object of ARN -> model id") from exc
    if not isinstance(profiles, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in profiles.items()
    ):
        raise SettingsError("APP_PROFILE_MODELS must be a JSON object of ARN -> model id")
    try:
        threshold = Decimal(os.environ.get("BUDGET_SOFT_THRESHOLD", "0.8") or "0.8")
    except ArithmeticError as exc:
        raise SettingsError("BUDGET_SOFT_THRESHOLD must be a decimal fraction such as 0.8") from exc
    return ProxySettings(
        region=_required("AWS_REGION"),
        usage_table=os.environ.get("USAGE_TABLE") or None,
        unpriced_policy="deny" if policy == "deny" else "allow",
        bedrock_connect_timeout=_float("BEDROCK_CONNECT_TIMEOUT_SECONDS", 2.0),
        bedrock_read_timeout=_float("BEDROCK_READ_TIMEOUT_SECONDS", 26.0),
        bedrock_max_attempts=_int("BEDROCK_MAX_ATTEMPTS", 1),
        usage_record_ttl_days=_int("USAGE_RECORD_TTL_DAYS", 400),
        budget_soft_threshold=threshold,
        app_profile_models=profiles,
    )
