"""The price book: loading, versioning, the rounding rule, exactness and the generator."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import subprocess
import sys
from decimal import Context, Decimal, Inexact
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bedrock_spend.domain.model_ids import ModelKind, ModelRef, parse_model_id
from bedrock_spend.domain.prices import DEFAULT_BOOK_PATH, Cost, PriceBook, load_price_book
from bedrock_spend.domain.usage import StreamUsage, Usage, usage_from_invoke

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "scripts" / "generate_prices.py"
BOOK = Path(DEFAULT_BOOK_PATH)
OVERRIDES = BOOK.with_name("price_overrides.json")

HAIKU_3 = "anthropic.claude-3-haiku-20240307-v1:0"
SONNET_45 = "anthropic.claude-sonnet-4-5-20250929-v1:0"
NOVA_MICRO = "amazon.nova-micro-v1:0"
LLAMA3_8B = "meta.llama3-8b-instruct-v1:0"
GPT6_LUNA = "openai.gpt-6-luna"


def ref(model_id: str, scope: str = "in-region", kind: ModelKind | None = None) -> ModelRef:
    kind = kind or ("base" if scope == "in-region" else "inference-profile")
    raw = model_id if scope == "in-region" else f"{scope}.{model_id}"
    return ModelRef(raw, kind, model_id, model_id.partition(".")[0], scope)


def raw_book() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(BOOK.read_text(encoding="utf-8"))
    return data


@cache
def generator() -> ModuleType:
    # Loaded by path: scripts/ is not a package. Dataclasses need the module registered.
    spec = importlib.util.spec_from_file_location("generate_prices", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def run_generator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATOR), *args], capture_output=True, text=True, check=False, timeout=120
    )


# --- loading ---


def test_default_book_is_read_once_per_process() -> None:
    assert load_price_book() is load_price_book()


def test_explicit_path_reads_that_file(tmp_path: Path) -> None:
    data = raw_book()
    data["version"] = "test-version"
    path = tmp_path / "book.json"
    path.write_text(json.dumps(data), encoding="utf-8")

    book = load_price_book(path)

    assert book.version == "test-version"
    assert book is not load_price_book()


def test_version_names_catalogue_overrides_and_content() -> None:
    overrides_hash = hashlib.sha256(OVERRIDES.read_bytes()).hexdigest()[:8]

    version = load_price_book().version

    assert version.startswith(f"genai-prices-0.2.3+overrides-{overrides_hash}+book-")
    assert len(version.rpartition("+book-")[2]) == 12


def test_version_changes_when_any_price_changes() -> None:
    gen = generator()
    inputs = gen.load_inputs()
    overrides = json.loads(inputs.overrides_bytes)
    overrides["models"]["ai21.jamba-1-5-mini-v1:0"]["prices"]["output"] = "0.41"
    changed = copy.copy(inputs)
    changed.overrides_bytes = json.dumps(overrides).encode()

    before, _ = gen.build_book(inputs)
    after, _ = gen.build_book(changed)

    assert before["version"] != after["version"]
    assert before["version"] == load_price_book().version


def test_book_ships_inside_the_package() -> None:
    assert BOOK.parent.name == "data" and BOOK.parent.parent.name == "bedrock_spend"
    assert BOOK.is_file()


def test_every_price_in_the_book_is_a_decimal_string() -> None:
    def no_float(text: str) -> None:
        raise AssertionError(f"float {text} in the price book")

    data = json.loads(BOOK.read_text(encoding="utf-8"), parse_float=no_float)
    for entry in data["models"].values():
        for name in ("prices", "global", "latency_optimized"):
            for part, value in entry.get(name, {}).items():
                if part != "long_context":
                    assert isinstance(value, str) and Decimal(value) >= 0
        for value in entry.get("images", {}).values():
            assert isinstance(value, str) and Decimal(value) > 0


def test_a_float_price_is_refused() -> None:
    data = raw_book()
    data["models"][HAIKU_3]["prices"]["input"] = 0.25

    with pytest.raises(ValueError, match="not a decimal string"):
        PriceBook.from_dict(data)


def test_a_discount_above_100_percent_is_refused() -> None:
    data = raw_book()
    data["discount_percent"] = "150"

    with pytest.raises(ValueError, match="discount"):
        PriceBook.from_dict(data)


def test_the_book_has_the_bedrock_catalogue_and_the_overrides() -> None:
    book = load_price_book()

    assert len(book.model_ids) >= 100
    for model_id in (HAIKU_3, SONNET_45, "amazon.titan-embed-text-v2:0", "cohere.embed-english-v3"):
        assert model_id in book.model_ids


# --- lookup ---


@pytest.mark.parametrize(
    ("model_id", "expected"),
    [
        (HAIKU_3, HAIKU_3),
        ("anthropic.claude-3-haiku-20240307-v1:0:200k", HAIKU_3),  # context-window variant
        ("amazon.titan-embed-text-v1:2:8k", "amazon.titan-embed-text-v1"),
        ("anthropic.claude-opus-4-6-v1", "anthropic.claude-opus-4-6-v1:0"),  # id without ":0"
        ("ANTHROPIC.CLAUDE-3-HAIKU-20240307-V1:0", HAIKU_3),
    ],
)
def test_lookup_finds_id_variants(model_id: str, expected: str) -> None:
    entry = load_price_book().lookup(model_id)

    assert entry is not None and entry.model_id == expected


@pytest.mark.parametrize(
    "model_id",
    ["amazon.titan-embed-text-v3:0", "anthropic.claude-3-haiku", "acme.model-v1:0", "anthropic"],
)
def test_lookup_never_guesses(model_id: str) -> None:
    assert load_price_book().lookup(model_id) is None


# --- id resolution: every id form Bedrock accepts lands on exactly one entry ---


@cache
def catalogue_inputs() -> Any:
    return generator().load_inputs()


def known_ids() -> list[str]:
    """Every id the catalogue names (keys and match literals), the overrides list, and the book."""
    gen, inputs = generator(), catalogue_inputs()
    ids: set[str] = set()
    for model in inputs.aws_models:
        key = gen.split_catalogue_id(model.id.lower())[1]
        ids |= {key, *gen.alias_candidates(model, key)}
    for group in json.loads(inputs.overrides_bytes).get("model_ids", []):
        ids |= set(group["ids"])
    book = raw_book()
    return sorted(ids | set(book["aliases"]) | set(book["models"]))


def id_forms(model_id: str) -> list[str]:
    return [
        model_id,
        f"us.{model_id}",
        f"global.{model_id}",
        f"arn:aws:bedrock:us-east-1::foundation-model/{model_id}",
        f"arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.{model_id}",
    ]


def test_the_id_walk_covers_the_catalogue_and_the_book() -> None:
    assert len(known_ids()) >= 220


@pytest.mark.parametrize("model_id", known_ids())
def test_every_known_id_resolves_to_one_entry_in_every_form(model_id: str) -> None:
    book = load_price_book()
    # The catalogue's own match rules (any scope form) name at most one entry, and it is ours.
    matched = generator().catalogue_keys(catalogue_inputs().aws_models, model_id)
    assert len(matched) <= 1, matched
    for form in id_forms(model_id):
        entry = book.lookup(parse_model_id(form).base_model or "")
        assert entry is not None, form
        assert not matched or {entry.model_id} == matched, form


@pytest.mark.parametrize(
    ("model_id", "expected"),
    [
        ("anthropic.claude-opus-4-5-20251101-v1:0", "anthropic.claude-opus-4-5-v1:0"),
        ("anthropic.claude-opus-4-5-20251101-v1", "anthropic.claude-opus-4-5-v1:0"),
        ("anthropic.claude-sonnet-4-6", "anthropic.claude-sonnet-4-6-v1:0"),
        ("openai.gpt-oss-120b", "openai.gpt-oss-120b-1:0"),
        ("openai.gpt-oss-20b", "openai.gpt-oss-20b-1:0"),
    ],
)
def test_documented_ids_resolve(model_id: str, expected: str) -> None:
    entry = load_price_book().lookup(model_id)

    assert entry is not None and entry.model_id == expected


def test_generator_refuses_a_documented_id_the_catalogue_does_not_match() -> None:
    gen = generator()
    inputs = gen.load_inputs()
    overrides = json.loads(inputs.overrides_bytes)
    overrides["model_ids"].append({"ids": ["acme.unknown-v1:0"], "source": "test"})
    inputs.overrides_bytes = json.dumps(overrides).encode()

    with pytest.raises(gen.GenerationError, match=r"acme\.unknown-v1:0"):
        gen.build_book(inputs)


def test_generator_refuses_an_alias_without_a_source() -> None:
    gen = generator()
    inputs = gen.load_inputs()
    overrides = json.loads(inputs.overrides_bytes)
    overrides["aliases"]["acme.other"] = {"model": HAIKU_3}
    inputs.overrides_bytes = json.dumps(overrides).encode()

    with pytest.raises(gen.GenerationError, match="source"):
        gen.build_book(inputs)


def test_generator_refuses_a_long_context_that_leaves_a_part_unpriced() -> None:
    gen = generator()
    inputs = gen.load_inputs()
    overrides = json.loads(inputs.overrides_bytes)
    overrides["models"][LLAMA3_8B] = {
        "prices": {"long_context": {"above_input_tokens": 1000, "input": "1"}},
        "source": "test",
    }
    inputs.overrides_bytes = json.dumps(overrides).encode()

    with pytest.raises(gen.GenerationError, match="every part"):
        gen.build_book(inputs)


# --- long context on streams: the threshold counts cache reads and writes as AWS does ---


def _long_context_stream(kind: str) -> Usage:
    stream = StreamUsage(parse_model_id(f"global.{SONNET_45}"))
    if kind == "invoke":
        stream.feed_chunk({"type": "message_start", "message": {"usage": {"input_tokens": 150_000}}})
        metrics = {"inputTokenCount": 150_000, "outputTokenCount": 1000, "cacheReadInputTokenCount": 60_000}
        stream.feed_chunk({"type": "message_stop", "amazon-bedrock-invocationMetrics": metrics})
    else:
        usage = {"inputTokens": 150_000, "outputTokens": 1000, "cacheReadInputTokens": 60_000}
        stream.feed_converse_event("metadata", {"usage": usage})
    return stream.usage()


@pytest.mark.parametrize("kind", ["invoke", "converse"])
def test_a_streamed_long_context_call_is_billed_at_the_tier(kind: str) -> None:
    usage = _long_context_stream(kind)

    cost = load_price_book().price(usage, parse_model_id(f"global.{SONNET_45}"), region="us-east-1")

    # 150000 + 60000 read = 210000 > 200K: 150000 x $6/M + 60000 x $0.60/M + 1000 x $22.50/M
    assert (cost.input, cost.cache_read, cost.output) == (900_000, 36_000, 22_500)
    assert cost.total == Decimal("958500")


# --- embeddings ---


@pytest.mark.parametrize("model_id", ["cohere.embed-english-v3", "us.cohere.embed-multilingual-v3"])
def test_an_embedding_call_with_an_output_count_header_is_priced_on_input(model_id: str) -> None:
    body = b'{"embeddings": [[0.1]], "id": "e", "response_type": "embeddings_floats", "texts": ["hi"]}'
    headers = {"x-amzn-bedrock-input-token-count": "21", "x-amzn-bedrock-output-token-count": "34"}
    usage = usage_from_invoke(parse_model_id(model_id), body, headers)

    cost = load_price_book().price(usage, parse_model_id(model_id), region="us-east-1")

    # 21 x $0.10/M = 2.1 micro-USD; the output count is not billed
    assert cost.priced, cost.reason
    assert (cost.input, cost.output, cost.total) == (Decimal("2.1"), 0, Decimal("2.1"))


# --- the rounding rule and exactness ---


def test_parts_without_multipliers_are_exact() -> None:
    # 1 token x $0.02/M = 0.02 micro-USD, nothing dropped
    cost = load_price_book().price(
        Usage(input_tokens=1, output_tokens=0), ref("amazon.titan-embed-text-v2:0"), region="us-east-1"
    )

    assert cost.input == Decimal("0.02")
    assert all(
        isinstance(getattr(cost, p), Decimal)
        for p in ("input", "output", "cache_read", "cache_write", "images")
    )


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        # 1 x $0.00875/M x 1.75 = 0.0153125 micro-USD -> 0.015312 (half-even: 2 is even)
        (1, "0.015312"),
        # 3 x $0.00875/M x 1.75 = 0.0459375 micro-USD -> 0.045938 (half-even: 7 rounds up)
        (3, "0.045938"),
    ],
)
def test_a_multiplier_rounds_each_part_half_even_to_a_picodollar(tokens: int, expected: str) -> None:
    usage = Usage(input_tokens=0, output_tokens=0, cache_read_tokens=tokens)

    cost = load_price_book().price(usage, ref(NOVA_MICRO), region="us-east-1", service_tier="priority")

    assert cost.cache_read == Decimal(expected)
    assert cost.cache_read.as_tuple().exponent == -6


def test_total_is_the_exact_sum_of_the_parts() -> None:
    usage = Usage(
        input_tokens=123,
        output_tokens=45,
        cache_read_tokens=6789,
        cache_write_5m_tokens=10,
        cache_write_1h_tokens=7,
    )

    cost = load_price_book().price(usage, ref(SONNET_45, "us"), region="us-east-1", service_tier="flex")

    # (123 x 3.3 + 45 x 16.5 + 6789 x 0.33 + 10 x 4.125 + 7 x 6.6) / 2
    # = (405.9 + 742.5 + 2240.37 + 41.25 + 46.2) / 2 micro-USD
    assert cost.total == Decimal("3476.22") / 2
    assert cost.cache_write == Decimal("43.725")  # (41.25 + 46.2) / 2: both TTLs in one part


def test_a_million_identical_calls_sum_to_one_call_times_a_million() -> None:
    book = load_price_book()
    exact = Context(prec=60, traps=[Inexact])
    usage = Usage(input_tokens=1234, output_tokens=567, cache_read_tokens=89, cache_write_5m_tokens=10)
    for tier in (None, "priority", "flex"):
        costs = {
            book.price(usage, ref(SONNET_45, "us"), region="us-east-1", service_tier=tier) for _ in range(100)
        }
        assert len(costs) == 1  # deterministic
        cost = costs.pop()
        total = Decimal(0)
        for _ in range(1_000_000):
            total = exact.add(total, cost.total)

        assert total == exact.multiply(cost.total, Decimal(1_000_000))
    # Without multipliers a million calls also cost what one call a million times as big costs
    # (on a model without a long-context tier: above 200K, Sonnet 4.5 changes rate on purpose).
    flat = "anthropic.claude-3-7-sonnet-20250219-v1:0"
    big = Usage(
        input_tokens=1234 * 10**6,
        output_tokens=567 * 10**6,
        cache_read_tokens=89 * 10**6,
        cache_write_5m_tokens=10**7,
    )
    one = book.price(usage, ref(flat, "us"), region="us-east-1")
    assert one.priced and one.cache_write > 0
    assert book.price(big, ref(flat, "us"), region="us-east-1").total == exact.multiply(
        one.total, Decimal(10**6)
    )


def test_pricing_does_not_depend_on_the_global_decimal_context() -> None:
    import decimal

    usage = Usage(input_tokens=987_654_321, output_tokens=123_456_789)
    expected = load_price_book().price(
        usage, ref(SONNET_45, "us"), region="us-east-1", service_tier="priority"
    )
    with decimal.localcontext() as ctx:
        ctx.prec = 3
        ctx.rounding = decimal.ROUND_DOWN

        cost = load_price_book().price(
            usage, ref(SONNET_45, "us"), region="us-east-1", service_tier="priority"
        )

    assert cost == expected


# --- behaviour details ---


def test_long_context_rates_start_above_the_threshold() -> None:
    book = load_price_book()
    at = Usage(input_tokens=271_000, output_tokens=0, cache_read_tokens=1000)  # 272,000 in total
    above = Usage(input_tokens=271_001, output_tokens=0, cache_read_tokens=1000)

    # 271000 x $0.10/M + 1000 x $0.01/M = 27100 + 10 micro-USD
    assert book.price(at, ref(GPT6_LUNA, "global"), region="us-east-1").total == Decimal("27110")
    # 271001 x $0.20/M + 1000 x $0.02/M = 54200.2 + 20 micro-USD
    assert book.price(above, ref(GPT6_LUNA, "global"), region="us-east-1").total == Decimal("54220.2")


def test_region_override_applies_to_in_region_and_geo_calls_from_that_region() -> None:
    book = load_price_book()
    usage = Usage(input_tokens=1000, output_tokens=1000)

    london = book.price(usage, ref(LLAMA3_8B), region="eu-west-2")
    virginia = book.price(usage, ref(LLAMA3_8B), region="us-east-1")

    assert london.total == Decimal("1170")
    assert virginia.total == Decimal("900")


def test_unknown_scope_is_priced_only_when_every_scope_costs_the_same() -> None:
    book = load_price_book()
    usage = Usage(input_tokens=1000, output_tokens=500)

    same = book.price(usage, ref(HAIKU_3, "unknown", "application-inference-profile"), region="us-east-1")
    differs = book.price(
        usage, ref(SONNET_45, "unknown", "application-inference-profile"), region="us-east-1"
    )

    assert same.priced and same.total == Decimal("875")
    assert not differs.priced and "scope unknown" in (differs.reason or "")


@pytest.mark.parametrize(
    ("tier", "latency", "reason"),
    [
        ("platinum", None, "unknown service tier"),
        (None, "ludicrous", "unknown latency"),
        ("priority", "optimized", "latency-optimized"),
    ],
)
def test_unknown_or_unpublished_modes_are_unpriced(
    tier: str | None, latency: str | None, reason: str
) -> None:
    usage = Usage(input_tokens=1000, output_tokens=1000)

    cost = load_price_book().price(
        usage, ref("amazon.nova-pro-v1:0"), region="us-east-1", service_tier=tier, latency=latency
    )

    assert not cost.priced and reason in (cost.reason or "")


def test_standard_and_default_are_the_list_price() -> None:
    book = load_price_book()
    usage = Usage(input_tokens=1000, output_tokens=1000)
    plain = book.price(usage, ref("amazon.nova-pro-v1:0"), region="us-east-1")

    assert (
        book.price(
            usage, ref("amazon.nova-pro-v1:0"), region="us-east-1", service_tier="default", latency="standard"
        )
        == plain
    )


def test_unpriced_cost_carries_the_book_version_and_no_amounts() -> None:
    cost = load_price_book().price(Usage(), ref(HAIKU_3), region="us-east-1")

    assert cost == Cost(
        priced=False, price_book_version=load_price_book().version, reason="no usage reported"
    )


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (ref(HAIKU_3), True),
        (ref(SONNET_45, "global"), True),
        (ref("amazon.nova-canvas-v1:0"), True),
        (ref("acme.model-v1:0"), False),
        (ref("amazon.nova-sonic-v1:0"), False),  # audio is not metered
        (ModelRef("arn:x", "provisioned", None, None, "in-region"), False),
        (ModelRef("arn:y", "application-inference-profile", None, None, "unknown"), False),
    ],
)
def test_is_priced(model: ModelRef, expected: bool) -> None:
    assert load_price_book().is_priced(model, region="us-east-1") is expected


# --- the generator ---


def test_check_passes_on_the_checked_in_book() -> None:
    result = run_generator("--check")

    assert result.returncode == 0, result.stderr


def test_check_fails_on_a_stale_book(tmp_path: Path) -> None:
    stale = tmp_path / "price_book.json"
    stale.write_text(BOOK.read_text(encoding="utf-8").replace('"0.25"', '"0.26"', 1), encoding="utf-8")

    result = run_generator("--check", "--out", str(stale))

    assert result.returncode == 1
    assert "stale" in result.stderr


def test_generator_is_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"

    for out in (first, second):
        assert run_generator("--out", str(out)).returncode == 0

    assert first.read_bytes() == second.read_bytes() == BOOK.read_bytes()


def test_generator_refuses_an_override_without_a_source() -> None:
    gen = generator()
    inputs = gen.load_inputs()
    overrides = json.loads(inputs.overrides_bytes)
    overrides["models"]["acme.new-model-v1:0"] = {"prices": {"input": "1"}}
    inputs.overrides_bytes = json.dumps(overrides).encode()

    with pytest.raises(gen.GenerationError, match="source"):
        gen.build_book(inputs)


def test_generator_refuses_float_prices_in_the_overrides() -> None:
    gen = generator()
    inputs = gen.load_inputs()
    inputs.overrides_bytes = inputs.overrides_bytes.replace(b'"input": "0.02"', b'"input": 0.02', 1)

    with pytest.raises(gen.GenerationError, match="strings"):
        gen.build_book(inputs)


def test_regional_uplift_rule_fills_a_missing_regional_price() -> None:
    gen = generator()
    inputs = gen.load_inputs()
    overrides = json.loads(inputs.overrides_bytes)
    overrides["models"]["anthropic.claude-sonnet-9-v1:0"] = {
        "global": {"input": "4", "output": "20"},
        "source": "test",
    }
    inputs.overrides_bytes = json.dumps(overrides).encode()

    book, _ = gen.build_book(inputs)

    assert book["models"]["anthropic.claude-sonnet-9-v1:0"]["prices"]["input"] == "4.4"
    assert book["models"]["anthropic.claude-sonnet-9-v1:0"]["prices"]["cache_write_1h"] == "8.8"


# --- import cost ---


@pytest.mark.parametrize(
    ("statement", "absent"),
    [
        ("import bedrock_spend.domain.prices as p; p.load_price_book()", "genai_prices"),
        ("import bedrock_spend.aws.profiles", "genai_prices"),
        ("import bedrock_spend.aws.profiles", "boto3"),
    ],
)
def test_lambda_modules_do_not_import_heavy_packages(statement: str, absent: str) -> None:
    code = f"import sys; {statement}; assert {absent!r} not in sys.modules, {absent!r}"

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )

    assert result.returncode == 0, result.stderr
