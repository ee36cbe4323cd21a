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

# What recording a call may take after Bedrock's answer ends, at worst: the ledger write and
# the soft-threshold read, each bounded by aws.py's timeouts and attempts ((1 + 2) s x 2).
RECORD_SECONDS = 15.0
# API Gateway's REST streaming limits: 15 minutes per call, 5 minutes idle (Regional).
API_GATEWAY_STREAM_SECONDS = 900.0
API_GATEWAY_IDLE_SECONDS = 300.0


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
    # Bedrock Runtime's base URL; AWS_ENDPOINT_URL_BEDROCK_RUNTIME overrides it (local stack).
    bedrock_endpoint: str = ""
    # bedrock-mantle's base URL (AWS_ENDPOINT_URL_BEDROCK_MANTLE overrides it).
    mantle_endpoint: str = ""
    unpriced_policy: Literal["allow", "deny"] = "allow"
    bedrock_connect_timeout: float = 2.0
    # Longest silence from Bedrock before a call is given up: API Gateway's own idle limit.
    bedrock_idle_timeout: float = API_GATEWAY_IDLE_SECONDS
    # Longest call; the function's timeout must leave room after it to record the call.
    max_call_seconds: float = 870.0
    function_timeout: float = API_GATEWAY_STREAM_SECONDS
    usage_record_ttl_days: int = 400
    budget_soft_threshold: Decimal = Decimal("0.8")
    # Calls a key with a budget may have in flight at once, unless the key says otherwise;
    # it bounds how far concurrent calls can overshoot a budget.
    max_in_flight_per_key: int = 4
    # How long a call waits for one of its key's in-flight places before a 429.
    in_flight_wait_seconds: float = 10.0
    # Application inference profile ARN -> base model id, for offline pricing.
    app_profile_models: dict[str, str] = field(default_factory=dict)
    # S3 buckets StartAsyncInvoke (video) may write to: the ProxyRole's s3:PutObject (template
    # parameter AsyncOutputBuckets). Empty: the async route refuses every submission.
    async_output_buckets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_call_seconds + RECORD_SECONDS > self.function_timeout:
            raise SettingsError(
                f"MAX_CALL_SECONDS ({self.max_call_seconds:g}) leaves less than {RECORD_SECONDS:g} s of the "
                f"function's {self.function_timeout:g} s timeout to record a call Bedrock has billed"
            )
        if min(self.bedrock_connect_timeout, self.bedrock_idle_timeout, self.max_call_seconds) <= 0:
            raise SettingsError("Bedrock timeouts must be positive")
        if self.max_in_flight_per_key < 1:
            raise SettingsError("MAX_IN_FLIGHT_PER_KEY must be at least 1")


@cache
def authorizer_settings() -> AuthorizerSettings:
    return AuthorizerSettings(api_key_table=_required("API_KEY_TABLE"))


def proxy_settings() -> ProxySettings:
    """Read once per app, when it builds its collaborators (not cached: the app holds them)."""
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
    region = _required("AWS_REGION")
    function_timeout = _float("FUNCTION_TIMEOUT_SECONDS", API_GATEWAY_STREAM_SECONDS)
    return ProxySettings(
        region=region,
        usage_table=os.environ.get("USAGE_TABLE") or None,
        unpriced_policy="deny" if policy == "deny" else "allow",
        bedrock_endpoint=(
            os.environ.get("AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
            or os.environ.get("AWS_ENDPOINT_URL")
            or f"https://bedrock-runtime.{region}.amazonaws.com"
        ).rstrip("/"),
        mantle_endpoint=(
            os.environ.get("AWS_ENDPOINT_URL_BEDROCK_MANTLE") or f"https://bedrock-mantle.{region}.api.aws"
        ).rstrip("/"),
        bedrock_connect_timeout=_float("BEDROCK_CONNECT_TIMEOUT_SECONDS", 2.0),
        bedrock_idle_timeout=_float("BEDROCK_IDLE_TIMEOUT_SECONDS", API_GATEWAY_IDLE_SECONDS),
        max_call_seconds=_float("MAX_CALL_SECONDS", function_timeout - 2 * RECORD_SECONDS),
        function_timeout=function_timeout,
        usage_record_ttl_days=_int("USAGE_RECORD_TTL_DAYS", 400),
        max_in_flight_per_key=_int("MAX_IN_FLIGHT_PER_KEY", 4),
        in_flight_wait_seconds=_float("IN_FLIGHT_WAIT_SECONDS", 10.0),
        budget_soft_threshold=threshold,
        app_profile_models=profiles,
        async_output_buckets=tuple(
            name.strip() for name in os.environ.get("ASYNC_OUTPUT_BUCKETS", "").split(",") if name.strip()
        ),
    )
