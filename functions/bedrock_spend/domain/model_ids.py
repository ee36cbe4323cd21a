"""Parse every Bedrock modelId form into provider, base model and scope."""

from __future__ import annotations

import re
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
    # "in-region", a geo prefix ("us", "eu", "apac", "jp", "au", "us-gov", "global"), or
    # "unknown" when only resolving the resource tells (application profiles, prompts, routers).
    scope: str
    region: str | None = None  # from an ARN
    account: str | None = None  # from an ARN
    resource_id: str | None = None  # the ARN's resource id (profile id, provisioned id, ...)


class InvalidModelIdError(ValueError):
    """The modelId is in no form Bedrock accepts."""


MAX_MODEL_ID_LENGTH = 2048
# "in" (India) is used by genai-prices' Bedrock catalogue for Claude 4.5+ profiles.
GEO_PREFIXES = frozenset({"us", "eu", "apac", "jp", "au", "in", "us-gov", "global"})

# Ids arrive percent-decoded once; a "%" left over means double encoding or an injection try.
_ALLOWED = re.compile(r"[A-Za-z0-9._:/@+-]+")
_BASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\.[A-Za-z0-9][A-Za-z0-9._:@+-]*")
_ARN = re.compile(
    r"arn:aws(?:-[a-z0-9-]+)?:(?P<service>[a-z0-9-]+):(?P<region>[a-z0-9-]{1,20}):"
    r"(?P<account>[0-9]{12})?:(?P<type>[a-z-]+)/(?P<rest>.+)"
)
_SHORT_ID = re.compile(r"[a-z0-9]{12}")
_NAME = re.compile(r"[A-Za-z0-9.:-]+")

# ARN resource types whose id says nothing about the model behind it.
_OPAQUE_RESOURCES: dict[str, tuple[ModelKind, str, re.Pattern[str]]] = {
    "application-inference-profile": ("application-inference-profile", "unknown", _NAME),
    "provisioned-model": ("provisioned", "in-region", _SHORT_ID),
    "custom-model-deployment": ("custom", "in-region", _SHORT_ID),
    "imported-model": ("imported", "in-region", _SHORT_ID),
    "prompt": ("prompt", "unknown", re.compile(r"[0-9A-Za-z]{10}(?::[0-9]{1,5})?")),
    "prompt-router": ("prompt-router", "unknown", _NAME),
    "default-prompt-router": ("prompt-router", "unknown", _NAME),
}


def parse_model_id(raw: str) -> ModelRef:
    """Classify ``raw``; raise :class:`InvalidModelIdError` for anything Bedrock would refuse."""
    if not raw:
        raise InvalidModelIdError("model id is empty")
    if len(raw) > MAX_MODEL_ID_LENGTH:
        raise InvalidModelIdError(f"model id is longer than {MAX_MODEL_ID_LENGTH} characters")
    if "%" in raw:
        raise InvalidModelIdError(f"model id {_clip(raw)} is still percent-encoded")
    if not _ALLOWED.fullmatch(raw):
        raise InvalidModelIdError(f"model id {_clip(raw)} contains a character outside [A-Za-z0-9._:/@+-]")
    if raw.startswith("arn:"):
        return _parse_arn(raw)
    if "/" in raw:
        raise InvalidModelIdError(f"model id {_clip(raw)} has a '/' but is not an ARN")
    scope, base = _scope_and_base(raw, raw)
    kind: ModelKind = "base" if scope == "in-region" else "inference-profile"
    return ModelRef(raw=raw, kind=kind, base_model=base, provider=_provider(base), scope=scope)


def family(ref: ModelRef) -> str:
    """Name the response-body family that the usage drivers read for ``ref``."""
    if ref.base_model is None:
        return "unknown"
    provider, _, name = ref.base_model.lower().partition(".")
    if provider == "anthropic":
        # Legacy Claude v2/instant text completions carry no usage; headers fill in.
        return "anthropic"
    if provider == "amazon":
        return _amazon_family(name)
    if provider == "twelvelabs" and name.startswith("pegasus"):
        return "video-analysis"  # billed per second of the video it reads
    if provider == "stability":
        return "image"
    if provider == "meta":
        return "llama"
    if provider == "mistral":
        return "mistral"
    if provider == "cohere":
        if name.startswith("command"):
            return "cohere-command"
        return "cohere-embed" if name.startswith("embed") else "unknown"
    if provider == "deepseek":
        return "deepseek" if name.startswith("r1") else "openai-style"
    if provider == "ai21":
        return "openai-style" if name.startswith("jamba") else "unknown"
    if provider in ("openai", "qwen"):
        return "openai-style"
    return "unknown"


def _amazon_family(name: str) -> str:
    # Order matters: the Nova media models share the "nova-" prefix with the text models.
    for prefix, fam in (
        ("nova-reel", "video"),
        ("nova-canvas", "image"),
        ("nova-2-multimodal-embeddings", "nova-embed"),
        ("nova-", "nova"),
        ("titan-embed", "titan-embed"),
        ("titan-image", "image"),
        ("titan-text", "titan-text"),
        ("titan-tg1", "titan-text"),
    ):
        if name.startswith(prefix):
            return fam
    return "unknown"


def _parse_arn(raw: str) -> ModelRef:
    match = _ARN.fullmatch(raw)
    if match is None:
        raise InvalidModelIdError(f"model id {_clip(raw)} is not a well-formed Bedrock ARN")
    service, region, account, rtype, rest = match.group("service", "region", "account", "type", "rest")
    if service == "sagemaker":
        if rtype != "endpoint" or account is None or not re.fullmatch(r"[A-Za-z0-9-]+", rest):
            raise InvalidModelIdError(f"model id {_clip(raw)} is not a SageMaker endpoint ARN")
        return _arn_ref(raw, "sagemaker", None, "in-region", region, account, rest)
    if service != "bedrock":
        raise InvalidModelIdError(f"model id {_clip(raw)} is an ARN of neither Bedrock nor SageMaker")
    if rtype == "foundation-model":
        # Bedrock's own pattern: foundation models are AWS-owned, so the account field is empty.
        if account is not None:
            raise InvalidModelIdError(f"model id {_clip(raw)}: a foundation-model ARN has no account")
        scope, base = _scope_and_base(rest, raw)
        if scope != "in-region":
            raise InvalidModelIdError(f"model id {_clip(raw)}: foundation-model ARN holds a profile id")
        return _arn_ref(raw, "base", base, scope, region, None, rest)
    if account is None:
        raise InvalidModelIdError(f"model id {_clip(raw)}: ARN lacks a 12-digit account")
    if rtype == "inference-profile":
        scope, base = _scope_and_base(rest, raw)
        if scope == "in-region":
            raise InvalidModelIdError(f"model id {_clip(raw)}: inference profile id lacks a geo prefix")
        return _arn_ref(raw, "inference-profile", base, scope, region, account, rest)
    if rtype == "custom-model":
        base, _, custom_id = rest.rpartition("/")
        if not _BASE_ID.fullmatch(base) or not _SHORT_ID.fullmatch(custom_id):
            raise InvalidModelIdError(f"model id {_clip(raw)} is not a custom-model ARN")
        return _arn_ref(raw, "custom", base, "in-region", region, account, custom_id)
    if rtype not in _OPAQUE_RESOURCES:
        raise InvalidModelIdError(f"model id {_clip(raw)} names an unknown Bedrock resource type")
    kind, scope, id_pattern = _OPAQUE_RESOURCES[rtype]
    if not id_pattern.fullmatch(rest):
        raise InvalidModelIdError(f"model id {_clip(raw)} has a malformed {rtype} id")
    return _arn_ref(raw, kind, None, scope, region, account, rest)


def _scope_and_base(model_id: str, raw: str) -> tuple[str, str]:
    head, _, tail = model_id.partition(".")
    if head in GEO_PREFIXES:
        if not _BASE_ID.fullmatch(tail) or tail.partition(".")[0] in GEO_PREFIXES:
            raise InvalidModelIdError(
                f"model id {_clip(raw)}: geo prefix {head!r} is not followed by a model id"
            )
        return head, tail
    if not _BASE_ID.fullmatch(model_id):
        raise InvalidModelIdError(f"model id {_clip(raw)} lacks a 'provider.' segment")
    return "in-region", model_id


def _arn_ref(
    raw: str,
    kind: ModelKind,
    base: str | None,
    scope: str,
    region: str,
    account: str | None,
    resource_id: str,
) -> ModelRef:
    return ModelRef(
        raw=raw,
        kind=kind,
        base_model=base,
        provider=_provider(base) if base else None,
        scope=scope,
        region=region,
        account=account,
        resource_id=resource_id,
    )


def _provider(base: str) -> str:
    return base.partition(".")[0]


def _clip(raw: str) -> str:
    # Bounded so a hostile id cannot flood logs or error bodies.
    return repr(raw[:100]) + ("..." if len(raw) > 100 else "")
