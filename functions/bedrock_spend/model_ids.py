"""Parse every Bedrock modelId form into provider, base model and scope."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ModelKind = Literal[
    "base",  # anthropic.claude-3-haiku-20240307-v1:0 or its foundation-model ARN
    "inference-profile",  # us.anthropic... / global.anthropic... or its inference-profile ARN
    "application-inference-profile",
    "provisioned",
    "custom",
    "imported",
    "prompt",
    "prompt-router",
    "sagemaker",
]


@dataclass(frozen=True, slots=True)
class ModelRef:
    raw: str  # exactly as the caller sent it (after one percent-decoding)
    kind: ModelKind
    base_model: str | None  # e.g. "anthropic.claude-3-haiku-20240307-v1:0"; None when unknown
    provider: str | None  # first dot-segment of base_model, e.g. "anthropic"
    scope: str  # "in-region", or a geo prefix: "us", "eu", "apac", "jp", "au", "us-gov", "global"
    region: str | None = None  # from an ARN
    account: str | None = None  # from an ARN
    resource_id: str | None = None  # the ARN's resource id (profile id, provisioned id, ...)
