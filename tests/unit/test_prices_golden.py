# ruff: noqa: E501 -- one golden case per line reads as a table
"""Golden costs, worked out by hand from AWS's published prices (per 1K or per 1M tokens,
per image), for every family, model-id form and usage shape the proxy prices.

Each row's comment is the arithmetic. Rates are USD per 1M tokens (1K rate x 1000); a token
count times a per-1M rate is micro-USD, so "1000 x $0.25/M" = 250 micro-USD = $0.00025.
Sources of each rate: docs/prices.md and the price book's ``sources``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from functools import cache

import pytest

from bedrock_spend.domain.model_ids import ModelKind, ModelRef, parse_model_id
from bedrock_spend.domain.prices import PriceBook, load_price_book
from bedrock_spend.domain.usage import Usage

ACCOUNT = "123456789012"

HAIKU_3 = "anthropic.claude-3-haiku-20240307-v1:0"
HAIKU_35 = "anthropic.claude-3-5-haiku-20241022-v1:0"
SONNET_4 = "anthropic.claude-sonnet-4-20250514-v1:0"
SONNET_45 = "anthropic.claude-sonnet-4-5-20250929-v1:0"
OPUS_45_DATED = "anthropic.claude-opus-4-5-20251101-v1:0"  # Bedrock's id; the catalogue keys it undated
HAIKU_45 = "anthropic.claude-haiku-4-5-20251001-v1:0"
NOVA_MICRO = "amazon.nova-micro-v1:0"
NOVA_LITE = "amazon.nova-lite-v1:0"
NOVA_PRO = "amazon.nova-pro-v1:0"
NOVA_SONIC = "amazon.nova-sonic-v1:0"
LLAMA3_8B = "meta.llama3-8b-instruct-v1:0"
LLAMA31_70B = "meta.llama3-1-70b-instruct-v1:0"
LLAMA31_405B = "meta.llama3-1-405b-instruct-v1:0"
LLAMA33_70B = "meta.llama3-3-70b-instruct-v1:0"
MISTRAL_7B = "mistral.mistral-7b-instruct-v0:2"
MIXTRAL = "mistral.mixtral-8x7b-instruct-v0:1"
MISTRAL_LARGE = "mistral.mistral-large-2402-v1:0"
TITAN_LITE = "amazon.titan-text-lite-v1"
TITAN_EXPRESS = "amazon.titan-text-express-v1"
TITAN_PREMIER = "amazon.titan-text-premier-v1:0"
TITAN_EMBED_V2 = "amazon.titan-embed-text-v2:0"
COHERE_EMBED_EN = "cohere.embed-english-v3"
COHERE_EMBED_ML = "cohere.embed-multilingual-v3"
GPT_OSS_120B = "openai.gpt-oss-120b-1:0"
GPT_OSS_20B = "openai.gpt-oss-20b-1:0"
GPT_OSS_120B_MANTLE = "openai.gpt-oss-120b"  # the name on Bedrock Mantle's OpenAI-compatible API
DEEPSEEK_R1 = "deepseek.r1-v1:0"
JAMBA_LARGE = "ai21.jamba-1-5-large-v1:0"
JAMBA_MINI = "ai21.jamba-1-5-mini-v1:0"
GPT6_LUNA = "openai.gpt-6-luna"
TITAN_IMAGE_V1 = "amazon.titan-image-generator-v1"
TITAN_IMAGE_V2 = "amazon.titan-image-generator-v2:0"
NOVA_CANVAS = "amazon.nova-canvas-v1:0"
SD35_LARGE = "stability.sd3-5-large-v1:0"
IMAGE_CORE = "stability.stable-image-core-v1:1"
IMAGE_ULTRA = "stability.stable-image-ultra-v1:1"


# --- model-id forms, built the way the model-id parser builds them ---


def base(model_id: str) -> ModelRef:
    return ModelRef(model_id, "base", model_id, model_id.partition(".")[0], "in-region")


def geo(prefix: str, model_id: str) -> ModelRef:
    return ModelRef(f"{prefix}.{model_id}", "inference-profile", model_id, model_id.partition(".")[0], prefix)


def fm_arn(model_id: str, region: str = "us-east-1") -> ModelRef:
    raw = f"arn:aws:bedrock:{region}::foundation-model/{model_id}"
    return replace(base(model_id), raw=raw, region=region, resource_id=model_id)


def profile_arn(prefix: str, model_id: str, region: str = "us-east-1") -> ModelRef:
    profile_id = f"{prefix}.{model_id}"
    raw = f"arn:aws:bedrock:{region}:{ACCOUNT}:inference-profile/{profile_id}"
    return replace(geo(prefix, model_id), raw=raw, region=region, account=ACCOUNT, resource_id=profile_id)


def opaque(kind: ModelKind, resource: str, resource_id: str) -> ModelRef:
    raw = f"arn:aws:bedrock:us-east-1:{ACCOUNT}:{resource}/{resource_id}"
    scope = "unknown" if kind == "application-inference-profile" else "in-region"
    return ModelRef(raw, kind, None, None, scope, "us-east-1", ACCOUNT, resource_id)


def tokens(inp: int, out: int, *, read: int = 0, write_5m: int = 0, write_1h: int = 0) -> Usage:
    return Usage(
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=read,
        cache_write_5m_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
    )


def images(count: int, variant: str | None) -> Usage:
    return Usage(images=count, image_variant=variant)


@dataclass(frozen=True)
class Golden:
    label: str
    ref: ModelRef
    usage: Usage
    usd: str | None  # None: unpriced
    region: str = "us-east-1"
    tier: str | None = None
    latency: str | None = None
    discount: str = "0"
    reason: str = ""  # a fragment of Cost.reason when unpriced


# fmt: off
GOLDEN: list[Golden] = [
    # --- Claude 3 Haiku ($0.00025 / $0.00125 per 1K): the same price in every id form ---
    # 1000 in x $0.25/M + 500 out x $1.25/M = $0.00025 + $0.000625 = $0.000875
    Golden("claude-3-haiku base id", base(HAIKU_3), tokens(1000, 500), "0.000875"),
    # same arithmetic: geo profiles cost the source Region's on-demand price
    Golden("claude-3-haiku us. profile", geo("us", HAIKU_3), tokens(1000, 500), "0.000875"),
    # same arithmetic
    Golden("claude-3-haiku eu. profile", geo("eu", HAIKU_3), tokens(1000, 500), "0.000875", region="eu-central-1"),
    # same arithmetic
    Golden("claude-3-haiku apac. profile", geo("apac", HAIKU_3), tokens(1000, 500), "0.000875", region="ap-southeast-1"),
    # same arithmetic
    Golden("claude-3-haiku foundation-model ARN", fm_arn(HAIKU_3), tokens(1000, 500), "0.000875"),
    # same arithmetic
    Golden("claude-3-haiku inference-profile ARN", profile_arn("us", HAIKU_3), tokens(1000, 500), "0.000875"),
    # London lists Claude 3 Haiku at the us-east-1 price: 1000 x $0.25/M + 500 x $1.25/M = $0.000875
    Golden("claude-3-haiku eu-west-2", base(HAIKU_3), tokens(1000, 500), "0.000875", region="eu-west-2"),
    # --- Claude Sonnet 4.5: global $3 / $15 per M; in-Region and geo +10% = $3.30 / $16.50 ---
    # 10000 x $3/M + 2000 x $15/M = $0.03 + $0.03 = $0.06
    Golden("sonnet-4.5 global.", geo("global", SONNET_45), tokens(10_000, 2000), "0.06"),
    # 10000 x $3.30/M + 2000 x $16.50/M = $0.033 + $0.033 = $0.066
    Golden("sonnet-4.5 us. (+10%)", geo("us", SONNET_45), tokens(10_000, 2000), "0.066"),
    # same as us.: $0.066
    Golden("sonnet-4.5 eu. (+10%)", geo("eu", SONNET_45), tokens(10_000, 2000), "0.066", region="eu-west-1"),
    # in-Region is a regional endpoint too: $0.066
    Golden("sonnet-4.5 base id in-Region (+10%)", base(SONNET_45), tokens(10_000, 2000), "0.066"),
    # 1000 x $3/M + 500 x $15/M + 50000 cache read x $0.30/M = $0.003 + $0.0075 + $0.015 = $0.0255
    Golden("sonnet-4.5 global. cache read", geo("global", SONNET_45), tokens(1000, 500, read=50_000), "0.0255"),
    # 100 x $3.30/M + 100 x $16.50/M + 20000 5m-write x $4.125/M = $0.00033 + $0.00165 + $0.0825 = $0.08448
    Golden("sonnet-4.5 us. cache write 5m", geo("us", SONNET_45), tokens(100, 100, write_5m=20_000), "0.08448"),
    # 100 x $3/M + 100 x $15/M + 20000 1h-write x $6/M (2x input) = $0.0003 + $0.0015 + $0.12 = $0.1218
    Golden("sonnet-4.5 global. cache write 1h", geo("global", SONNET_45), tokens(100, 100, write_1h=20_000), "0.1218"),
    # 10000 1h-write x $6.60/M + 10000 5m-write x $4.125/M = $0.066 + $0.04125 = $0.10725
    Golden("sonnet-4.5 us. 1h + 5m writes", geo("us", SONNET_45), tokens(0, 0, write_5m=10_000, write_1h=10_000), "0.10725"),
    # --- Long context (more than 200K input tokens, cache reads and writes counted): every part at the tier ---
    # Sonnet 4.5 global tier $6 / $22.50: 250000 x $6/M + 10000 x $22.50/M = $1.50 + $0.225 = $1.725
    Golden("sonnet-4.5 global. long context", geo("global", SONNET_45), tokens(250_000, 10_000), "1.725"),
    # regional tier $6.60 / $24.75: 250000 x $6.60/M + 10000 x $24.75/M = $1.65 + $0.2475 = $1.8975
    Golden("sonnet-4.5 us. long context (+10%)", geo("us", SONNET_45), tokens(250_000, 10_000), "1.8975"),
    # same arithmetic in-Region
    Golden("sonnet-4.5 base id long context", base(SONNET_45), tokens(250_000, 10_000), "1.8975"),
    # 50000 + 120000 read + 40000 write = 210000 > 200K: 50000 x $6 + 120000 x $0.60 + 40000 x $7.50 + 1000 x $22.50 (/M) = $0.30 + $0.072 + $0.30 + $0.0225 = $0.6945
    Golden("sonnet-4.5 global. long context from cache", geo("global", SONNET_45), tokens(50_000, 1000, read=120_000, write_5m=40_000), "0.6945"),
    # exactly 200000 input is not above the threshold: 200000 x $3/M + 1000 x $15/M = $0.60 + $0.015 = $0.615
    Golden("sonnet-4.5 global. 200000 input: base rate", geo("global", SONNET_45), tokens(200_000, 1000), "0.615"),
    # one more: 200001 x $6/M + 1000 x $22.50/M = $1.200006 + $0.0225 = $1.222506
    Golden("sonnet-4.5 global. 200001 input: long context", geo("global", SONNET_45), tokens(200_001, 1000), "1.222506"),
    # 10000 + 200000 1h writes = 210000: 10000 x $6.60/M + 200000 x $13.20/M = $0.066 + $2.64 = $2.706
    Golden("sonnet-4.5 us. long context 1h writes", geo("us", SONNET_45), tokens(10_000, 0, write_1h=200_000), "2.706"),
    # priority x1.75 on the tier: $1.725 x 1.75 = $3.01875
    Golden("sonnet-4.5 global. long context priority", geo("global", SONNET_45), tokens(250_000, 10_000), "3.01875", tier="priority"),
    # Sonnet 4 tier $6 / $22.50 in every scope: 300000 x $6/M + 5000 x $22.50/M = $1.80 + $0.1125 = $1.9125
    Golden("sonnet-4 us. long context", geo("us", SONNET_4), tokens(300_000, 5000), "1.9125"),
    # same arithmetic for global.
    Golden("sonnet-4 global. long context", geo("global", SONNET_4), tokens(300_000, 5000), "1.9125"),
    # 150000 + 100000 read = 250000: 150000 x $6/M + 100000 x $0.60/M + 2000 x $22.50/M = $0.90 + $0.06 + $0.045 = $1.005
    Golden("sonnet-4 base id long context from cache", base(SONNET_4), tokens(150_000, 2000, read=100_000), "1.005"),
    # --- Claude Opus 4.5 under Bedrock's dated id: global $5 / $25, regional $5.50 / $27.50 ---
    # 1000 x $5/M + 1000 x $25/M = $0.005 + $0.025 = $0.03
    Golden("opus-4.5 dated global.", geo("global", OPUS_45_DATED), tokens(1000, 1000), "0.03"),
    # 1000 x $5.50/M + 1000 x $27.50/M = $0.0055 + $0.0275 = $0.033
    Golden("opus-4.5 dated us.", geo("us", OPUS_45_DATED), tokens(1000, 1000), "0.033"),
    # same arithmetic
    Golden("opus-4.5 dated base id", base(OPUS_45_DATED), tokens(1000, 1000), "0.033"),
    # same arithmetic
    Golden("opus-4.5 dated foundation-model ARN", fm_arn(OPUS_45_DATED), tokens(1000, 1000), "0.033"),
    # same arithmetic
    Golden("opus-4.5 dated inference-profile ARN", profile_arn("eu", OPUS_45_DATED, "eu-west-1"), tokens(1000, 1000), "0.033", region="eu-west-1"),
    # global rate through a global. profile ARN: $0.03
    Golden("opus-4.5 dated global. profile ARN", profile_arn("global", OPUS_45_DATED), tokens(1000, 1000), "0.03"),
    # --- Claude Haiku 4.5: global $1 / $5; regional $1.10 / $5.50 ---
    # 2000 x $1/M + 1000 x $5/M = $0.002 + $0.005 = $0.007
    Golden("haiku-4.5 global.", geo("global", HAIKU_45), tokens(2000, 1000), "0.007"),
    # 2000 x $1.10/M + 1000 x $5.50/M = $0.0022 + $0.0055 = $0.0077
    Golden("haiku-4.5 us. (+10%)", geo("us", HAIKU_45), tokens(2000, 1000), "0.0077"),
    # same as us.: $0.0077
    Golden("haiku-4.5 eu. inference-profile ARN (+10%)", profile_arn("eu", HAIKU_45, "eu-west-1"), tokens(2000, 1000), "0.0077", region="eu-west-1"),
    # --- earlier Claude: no regional premium ---
    # Sonnet 4 $3 / $15 everywhere: 1000 x $3/M + 1000 x $15/M = $0.003 + $0.015 = $0.018
    Golden("sonnet-4 global.", geo("global", SONNET_4), tokens(1000, 1000), "0.018"),
    # same price on us.: $0.018
    Golden("sonnet-4 us.", geo("us", SONNET_4), tokens(1000, 1000), "0.018"),
    # 3.5 Haiku $0.0008 / $0.004, write $0.001, read $0.00008 per 1K:
    # 1000 x $0.80/M + 1000 x $4/M + 10000 x $0.08/M + 2000 x $1/M = $0.0008 + $0.004 + $0.0008 + $0.002 = $0.0076
    Golden("claude-3.5-haiku cache read + 5m write", geo("us", HAIKU_35), tokens(1000, 1000, read=10_000, write_5m=2000), "0.0076"),
    # --- Amazon Nova (cache read = 0.25 x input) ---
    # Micro $0.000035 / $0.00014 per 1K: 10000 x $0.035/M + 2000 x $0.14/M = $0.00035 + $0.00028 = $0.00063
    Golden("nova-micro", base(NOVA_MICRO), tokens(10_000, 2000), "0.00063"),
    # Lite $0.06 / $0.24, read $0.015/M: 1000 x $0.06/M + 100000 x $0.015/M + 500 x $0.24/M = $0.00006 + $0.0015 + $0.00012 = $0.00168
    Golden("nova-lite cache read", geo("us", NOVA_LITE), tokens(1000, 500, read=100_000), "0.00168"),
    # Pro $0.0008 / $0.0032 per 1K: 1000 x $0.80/M + 1000 x $3.20/M = $0.0008 + $0.0032 = $0.004
    Golden("nova-pro us.", geo("us", NOVA_PRO), tokens(1000, 1000), "0.004"),
    # + 20000 cache read x $0.20/M = $0.004 + $0.004 = $0.008
    Golden("nova-pro cache read", base(NOVA_PRO), tokens(1000, 1000, read=20_000), "0.008"),
    # writes at the input rate (decision): 1000 x $0.80/M + 5000 x $0.80/M = $0.0008 + $0.004 = $0.0048
    Golden("nova-pro cache write at input rate", base(NOVA_PRO), tokens(1000, 0, write_5m=5000), "0.0048"),
    # latency optimized $0.001 / $0.004 per 1K: 1000 x $1/M + 1000 x $4/M = $0.001 + $0.004 = $0.005
    Golden("nova-pro latency-optimized", geo("us", NOVA_PRO), tokens(1000, 1000), "0.005", region="us-east-2", latency="optimized"),
    # priority $0.0014 / $0.0056 per 1K (1.75x): 1000 x $1.40/M + 1000 x $5.60/M = $0.007
    Golden("nova-pro priority tier", base(NOVA_PRO), tokens(1000, 1000), "0.007", tier="priority"),
    # flex $0.0004 / $0.0016 per 1K (0.5x): 1000 x $0.40/M + 1000 x $1.60/M = $0.002
    Golden("nova-pro flex tier", base(NOVA_PRO), tokens(1000, 1000), "0.002", tier="flex"),
    # --- Meta Llama ---
    # 3.1 70B $0.00072 / $0.00072 per 1K: 1000 x $0.72/M + 1000 x $0.72/M = $0.00144
    Golden("llama-3.1-70b", base(LLAMA31_70B), tokens(1000, 1000), "0.00144"),
    # latency optimized $0.0009 / $0.0009 per 1K: 1000 x $0.90/M x 2 = $0.0018
    Golden("llama-3.1-70b latency-optimized", geo("us", LLAMA31_70B), tokens(1000, 1000), "0.0018", region="us-east-2", latency="optimized"),
    # 3.1 405B latency optimized $0.003 / $0.003 per 1K: 1000 x $3/M x 2 = $0.006
    Golden("llama-3.1-405b latency-optimized", geo("us", LLAMA31_405B), tokens(1000, 1000), "0.006", region="us-east-2", latency="optimized"),
    # 3.3 70B $0.00072 / $0.00072 per 1K: 2000 x $0.72/M + 500 x $0.72/M = $0.00144 + $0.00036 = $0.0018
    Golden("llama-3.3-70b us.", geo("us", LLAMA33_70B), tokens(2000, 500), "0.0018"),
    # 3 8B us-east-1 $0.0003 / $0.0006 per 1K: 1000 x $0.30/M + 1000 x $0.60/M = $0.0009
    Golden("llama-3-8b us-east-1", base(LLAMA3_8B), tokens(1000, 1000), "0.0009"),
    # 3 8B London $0.00039 / $0.00078 per 1K: 1000 x $0.39/M + 1000 x $0.78/M = $0.00117
    Golden("llama-3-8b eu-west-2 override", base(LLAMA3_8B), tokens(1000, 1000), "0.00117", region="eu-west-2"),
    # --- Mistral ---
    # 7B $0.00015 / $0.0002 per 1K: 1000 x $0.15/M + 1000 x $0.20/M = $0.00035
    Golden("mistral-7b", base(MISTRAL_7B), tokens(1000, 1000), "0.00035"),
    # Mixtral London $0.00059 / $0.00091 per 1K: 1000 x $0.59/M + 1000 x $0.91/M = $0.0015
    Golden("mixtral eu-west-2 override", fm_arn(MIXTRAL, "eu-west-2"), tokens(1000, 1000), "0.0015", region="eu-west-2"),
    # Large (24.02) $0.004 / $0.012 per 1K: 1000 x $4/M + 1000 x $12/M = $0.016
    Golden("mistral-large-2402", base(MISTRAL_LARGE), tokens(1000, 1000), "0.016"),
    # --- Amazon Titan Text ---
    # Express $0.0002 / $0.0006 per 1K: 1000 x $0.20/M + 1000 x $0.60/M = $0.0008
    Golden("titan-text-express", base(TITAN_EXPRESS), tokens(1000, 1000), "0.0008"),
    # Express London $0.0003 / $0.0009 per 1K: 1000 x $0.30/M + 1000 x $0.90/M = $0.0012
    Golden("titan-text-express eu-west-2 override", base(TITAN_EXPRESS), tokens(1000, 1000), "0.0012", region="eu-west-2"),
    # Lite $0.00015 / $0.0002 per 1K: 1000 x $0.15/M + 1000 x $0.20/M = $0.00035
    Golden("titan-text-lite", base(TITAN_LITE), tokens(1000, 1000), "0.00035"),
    # Premier $0.0005 / $0.0015 per 1K: 1000 x $0.50/M + 1000 x $1.50/M = $0.002
    Golden("titan-text-premier", base(TITAN_PREMIER), tokens(1000, 1000), "0.002"),
    # --- embeddings: input only ---
    # Titan Text Embeddings V2 $0.00002 per 1K = $0.02/M: 1,000,000 x $0.02/M = $0.02
    Golden("titan-embed-v2 1M tokens", base(TITAN_EMBED_V2), tokens(1_000_000, 0), "0.02"),
    # 1234 x $0.02/M = 24.68 micro-USD = $0.00002468
    Golden("titan-embed-v2 1234 tokens", base(TITAN_EMBED_V2), tokens(1234, 0), "0.00002468"),
    # Cohere Embed English $0.0001 per 1K = $0.10/M: 10000 x $0.10/M = $0.001
    Golden("cohere-embed-english", base(COHERE_EMBED_EN), tokens(10_000, 0), "0.001"),
    # Cohere Embed Multilingual $0.10/M: 1000 x $0.10/M = $0.0001
    Golden("cohere-embed-multilingual", base(COHERE_EMBED_ML), tokens(1000, 0), "0.0001"),
    # --- other providers ---
    # gpt-oss-120b $0.00015 / $0.0006 per 1K: 1000 x $0.15/M + 2000 x $0.60/M = $0.00015 + $0.0012 = $0.00135
    Golden("gpt-oss-120b", base(GPT_OSS_120B), tokens(1000, 2000), "0.00135"),
    # Bedrock Mantle's name for the same model: $0.00135
    Golden("gpt-oss-120b Mantle name", base(GPT_OSS_120B_MANTLE), tokens(1000, 2000), "0.00135"),
    # flex 0.5x: $0.00135 / 2 = $0.000675
    Golden("gpt-oss-120b flex tier", base(GPT_OSS_120B), tokens(1000, 2000), "0.000675", tier="flex"),
    # gpt-oss-20b $0.00007 / $0.0003 per 1K: 10000 x $0.07/M + 10000 x $0.30/M = $0.0007 + $0.003 = $0.0037
    Golden("gpt-oss-20b", base(GPT_OSS_20B), tokens(10_000, 10_000), "0.0037"),
    # DeepSeek-R1 $0.00135 / $0.0054 per 1K: 1000 x $1.35/M + 1000 x $5.40/M = $0.00675
    Golden("deepseek-r1 us.", geo("us", DEEPSEEK_R1), tokens(1000, 1000), "0.00675"),
    # Jamba 1.5 Large $0.002 / $0.008 per 1K: 1000 x $2/M + 1000 x $8/M = $0.01
    Golden("jamba-1.5-large", base(JAMBA_LARGE), tokens(1000, 1000), "0.01"),
    # Jamba 1.5 Mini $0.0002 / $0.0004 per 1K: 1000 x $0.20/M + 1000 x $0.40/M = $0.0006
    Golden("jamba-1.5-mini", base(JAMBA_MINI), tokens(1000, 1000), "0.0006"),
    # GPT-6 Luna global $0.10 / $0.50 per M up to 272K input: 100000 x $0.10/M + 1000 x $0.50/M = $0.01 + $0.0005 = $0.0105
    Golden("gpt-6-luna global. short context", geo("global", GPT6_LUNA), tokens(100_000, 1000), "0.0105"),
    # above 272K input every token is at $0.20 / $0.75 per M: 300000 x $0.20/M + 1000 x $0.75/M = $0.06 + $0.00075 = $0.06075
    Golden("gpt-6-luna global. long context", geo("global", GPT6_LUNA), tokens(300_000, 1000), "0.06075"),
    # --- images, per image by size and quality ---
    # Titan Image v1, 512x512 or smaller, standard: 1 x $0.008
    Golden("titan-image-v1 512 standard", base(TITAN_IMAGE_V1), images(1, "512x512/standard"), "0.008"),
    # larger than 512x512, premium: 2 x $0.012 = $0.024
    Golden("titan-image-v1 1024 premium x2", base(TITAN_IMAGE_V1), images(2, "1024x1024/premium"), "0.024"),
    # Titan Image v2, 768x1280 (larger than 512x512), standard: 3 x $0.01 = $0.03
    Golden("titan-image-v2 768x1280 standard x3", base(TITAN_IMAGE_V2), images(3, "768x1280/standard"), "0.03"),
    # Nova Canvas up to 1024x1024 standard: 1 x $0.04
    Golden("nova-canvas 1024 standard", base(NOVA_CANVAS), images(1, "1024x1024/standard"), "0.04"),
    # Nova Canvas up to 2048x2048 premium: 2 x $0.08 = $0.16
    Golden("nova-canvas 2048 premium x2", base(NOVA_CANVAS), images(2, "2048x2048/premium"), "0.16"),
    # SD3.5 Large, flat: 1 x $0.08
    Golden("sd3.5-large", base(SD35_LARGE), images(1, "default"), "0.08"),
    # Stable Image Core, flat: 2 x $0.04 = $0.08
    Golden("stable-image-core x2", base(IMAGE_CORE), images(2, "default"), "0.08"),
    # Stable Image Ultra, flat: 1 x $0.14
    Golden("stable-image-ultra", geo("us", IMAGE_ULTRA), images(1, "default"), "0.14"),
    # --- negotiated discount, applied to every part ---
    # 10% off $0.000875 (Claude 3 Haiku, 1000 in / 500 out) = $0.0007875
    Golden("claude-3-haiku 10% discount", base(HAIKU_3), tokens(1000, 500), "0.0007875", discount="10"),
    # 10% off 1 x $0.04 (Nova Canvas) = $0.036
    Golden("nova-canvas 10% discount", base(NOVA_CANVAS), images(1, "1024x1024/standard"), "0.036", discount="10"),
    # --- unpriced: never $0 ---
    Golden("provisioned throughput", opaque("provisioned", "provisioned-model", "abcdefghijkl"), tokens(1000, 500), None, reason="per hour"),
    Golden("custom model", opaque("custom", "custom-model-deployment", "abcdefghijkl"), tokens(1000, 500), None, reason="custom"),
    Golden("imported model", opaque("imported", "imported-model", "abcdefghijkl"), tokens(1000, 500), None, reason="imported"),
    Golden("unresolved application profile", opaque("application-inference-profile", "application-inference-profile", "a1b2c3d4e5f6"), tokens(1000, 500), None, reason="not resolved"),
    Golden("unknown model", base("acme.mystery-model-v1:0"), tokens(1000, 500), None, reason="no price for model"),
    Golden("no usage reported", base(HAIKU_3), Usage(), None, reason="no usage reported"),
    Golden("1h write on a model without a 1h price", base(HAIKU_35), tokens(100, 100, write_1h=5000), None, reason="cache write (1h)"),
    Golden("output tokens on an embedding model", base(COHERE_EMBED_EN), tokens(100, 5), None, reason="no output price"),
    Golden("image variant beyond the largest bucket", base(NOVA_CANVAS), images(1, "4096x4096/standard"), None, reason="image variant"),
    Golden("image quality with no price", base(TITAN_IMAGE_V2), images(1, "1024x1024/ultra"), None, reason="image variant"),
    Golden("image variant unknown", base(TITAN_IMAGE_V1), images(1, None), None, reason="size and quality unknown"),
    Golden("latency-optimized without a price", base(HAIKU_3), tokens(1000, 500), None, latency="optimized", reason="latency-optimized"),
    Golden("reserved tier", base(NOVA_PRO), tokens(1000, 500), None, tier="reserved", reason="commitment"),
    Golden("audio model", base(NOVA_SONIC), tokens(1000, 500), None, reason="not metered"),
]
# fmt: on


@cache
def book(discount: str) -> PriceBook:
    if discount == "0":
        return load_price_book()
    import json

    from bedrock_spend.domain.prices import DEFAULT_BOOK_PATH

    with open(DEFAULT_BOOK_PATH, encoding="utf-8") as f:
        raw = json.load(f)
    raw["discount_percent"] = discount
    return PriceBook.from_dict(raw)


def test_the_table_is_big_enough() -> None:
    assert len(GOLDEN) >= 40
    assert len({row.label for row in GOLDEN}) == len(GOLDEN)


@pytest.mark.parametrize("row", GOLDEN, ids=[row.label for row in GOLDEN])
def test_golden_cost(row: Golden) -> None:
    cost = book(row.discount).price(
        row.usage, row.ref, region=row.region, service_tier=row.tier, latency=row.latency
    )

    if row.usd is None:
        assert not cost.priced
        assert row.reason in (cost.reason or "")
        assert cost.total == 0
    else:
        assert cost.priced, cost.reason
        assert cost.total == Decimal(row.usd) * 1_000_000  # micro-USD, exactly
        assert cost.price_book_version == load_price_book().version


@pytest.mark.parametrize(
    "row",
    [r for r in GOLDEN if r.ref.kind in ("base", "inference-profile")],
    ids=lambda r: r.label,
)
def test_fixture_refs_are_what_the_parser_returns(row: Golden) -> None:
    assert parse_model_id(row.ref.raw) == row.ref
