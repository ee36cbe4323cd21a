"""Generate the price book the Lambdas read: ``functions/bedrock_spend/data/price_book.json``.

    python scripts/generate_prices.py          # (re)write the checked-in book
    python scripts/generate_prices.py --check  # exit 1 if the checked-in book is stale

Inputs: the ``aws`` provider of the installed genai-prices catalogue and the hand-written
``data/price_overrides.json``. Same inputs give a byte-identical file. Only this script imports
genai_prices; the Lambdas read the JSON (see docs/prices.md).

Mapping a catalogue entry to Bedrock base model ids
---------------------------------------------------
1. The catalogue id names the scope: ``global.X`` is the rate of the ``global.`` cross-Region
   profile of X; ``regional.X`` the rate of in-Region calls and geographic profiles
   (``us.``/``eu.``/``apac.``...); a plain ``X`` one rate for every scope. The book key is X,
   with the scope prefix removed: ``global.`` prices go to the entry's ``global`` set, the others
   to its ``prices`` set. Two catalogue entries for the same key and scope is an error.
2. Aliases come from the catalogue's own match rules: every literal in an equals / starts-with /
   ends-with / contains clause that looks like ``provider.name`` (after dropping a geo prefix or
   a leading ``/``) becomes an exact alias of that key, and so does each key without its
   trailing ``:N``. An alias claimed by two keys is dropped. The runtime never matches by
   prefix or substring: it tries the id, the id without a ``:NNNk`` context-window suffix and
   the id without its ``:N`` version, each as an exact key or alias.
   The overrides' ``model_ids`` list the ids Bedrock documents (dated forms such as
   ``anthropic.claude-opus-4-5-20251101-v1:0``, undated ones, Mantle names); each is resolved
   with the catalogue's own match rules, tried bare and behind every geo prefix, and must land on
   exactly one key (else generation fails). Ids the catalogue's rules do not match are mapped
   in the overrides' ``aliases``, each with a source.
3. Time-conditional prices keep the newest one (``effective_from`` records its start date);
   context-length tiers become a ``long_context`` set (one threshold per model); price keys the
   proxy cannot meter (audio tokens) mark the model ``unmetered``; any other key is an error.
4. Overrides are merged part by part (an override part wins); ``regions`` sets replace the
   default set in that Region; then the rules fill gaps (regional +10%, derived cache prices)
   and check the catalogue's existing values against them, warning on stderr when they differ.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Context, Decimal, DivisionByZero, Inexact, InvalidOperation, Overflow, Rounded
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from bedrock_spend.domain.model_ids import GEO_PREFIXES

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "functions" / "bedrock_spend" / "data"
BOOK_PATH = DATA_DIR / "price_book.json"
OVERRIDES_PATH = DATA_DIR / "price_overrides.json"

SCHEMA_VERSION = 1
PARTS = ("input", "output", "cache_read", "cache_write", "cache_write_1h")
# genai-prices price keys (USD per 1M) -> book parts.
CATALOGUE_PARTS = {f"{part}_mtok": part for part in PARTS}
# Priced by the catalogue but not in Usage: such models are marked unmetered, never half-priced.
UNMETERED_KEYS = {"input_audio_mtok": "input_audio", "output_audio_mtok": "output_audio"}
PRICE_SETS = ("prices", "global", "latency_optimized")
# Non-token units an override may carry (decimal strings; see docs/prices.md). The runtime ignores
# them until metering reads them; the book and the coverage test already do.
UNIT_KEYS = ("queries", "video_seconds", "audio", "input_images", "input_media_seconds")
UNITS = {
    "tokens": "USD per 1,000,000 tokens",
    "images": "USD per image",
    "queries": "USD per query (AWS bills rerank per 1,000 queries; one query holds up to 100 documents)",
    "video_seconds": "USD per second of generated video, by resolution ('*' = any)",
    "audio": "USD per 1,000,000 speech tokens (input, output); text tokens stay in prices",
    "input_images": "USD per input image",
    "input_media_seconds": "USD per second of input media (video, audio)",
}
LONG_CONTEXT = "long_context"
THRESHOLD = "above_input_tokens"
# Geo prefixes seen in catalogue match rules, stripped when deriving aliases: Bedrock's own
# (model_ids) and two the catalogue's patterns use besides.
CATALOGUE_GEO_PREFIXES = GEO_PREFIXES | {"ca", "regional"}
MAX_PRICE_DECIMALS = 6  # so tokens x price is exact in micro-USD (1e-12 USD per token)

# Exact arithmetic only: any rounding raises.
EXACT = Context(prec=60, traps=[Inexact, Rounded, InvalidOperation, DivisionByZero, Overflow])


class GenerationError(Exception):
    """The inputs cannot be turned into a trustworthy price book."""


@dataclass
class Inputs:
    genai_prices_version: str
    aws_models: list[Any]  # genai_prices.types.ModelInfo
    overrides_bytes: bytes


# --- reading the inputs ---


def load_inputs(overrides_path: Path = OVERRIDES_PATH) -> Inputs:
    from genai_prices.data import providers

    aws = [p for p in providers if p.id == "aws"]
    if len(aws) != 1:
        raise GenerationError("genai-prices has no single 'aws' provider")
    return Inputs(package_version("genai-prices"), list(aws[0].models), overrides_path.read_bytes())


# --- catalogue -> entries ---


def fmt(value: Decimal) -> str:
    """Canonical decimal string: no exponent, no trailing zeros."""
    text = format(value.normalize(EXACT), "f")
    return text if text != "-0" else "0"


def price(value: object, where: str) -> Decimal:
    if isinstance(value, float) or not isinstance(value, (str, Decimal, int)):
        raise GenerationError(f"{where}: price {value!r} must be a decimal string")
    try:
        d = Decimal(value)
    except InvalidOperation as exc:
        raise GenerationError(f"{where}: {value!r} is not a decimal") from exc
    if not d.is_finite() or d < 0:
        raise GenerationError(f"{where}: price {value!r} must be finite and >= 0")
    exponent = d.normalize(EXACT).as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_PRICE_DECIMALS:
        raise GenerationError(f"{where}: price {value!r} has more than {MAX_PRICE_DECIMALS} decimals")
    return d


def split_catalogue_id(model_id: str) -> tuple[str, str]:
    """``global.X`` -> ("global", X); ``regional.X`` or ``X`` -> ("prices", X)."""
    for prefix, price_set in (("global.", "global"), ("regional.", "prices")):
        if model_id.startswith(prefix):
            return price_set, model_id[len(prefix) :]
    return "prices", model_id


def latest_price(model: Any) -> tuple[Any, str | None]:
    """The catalogue's newest ModelPrice and the date it starts (None when unconditional)."""
    from genai_prices.types import ConditionalPrice, ModelPrice, StartDateConstraint

    if isinstance(model.prices, ModelPrice):
        return model.prices, None
    conditionals: list[ConditionalPrice] = list(model.prices)
    for c in conditionals:
        if c.constraint is not None and not isinstance(c.constraint, StartDateConstraint):
            raise GenerationError(f"{model.id}: unsupported price constraint {c.constraint!r}")
    # The catalogue's last conditional price is its newest; earlier ones are history.
    last = conditionals[-1]
    if isinstance(last.constraint, StartDateConstraint):
        return last.prices, last.constraint.start_date.isoformat()
    return last.prices, None


def price_set_from(model_price: Any, where: str) -> tuple[dict[str, Any], list[str]]:
    """A book price set (``long_context`` included) and the unmetered parts of one ModelPrice."""
    from genai_prices.types import TieredPrices

    base: dict[str, Any] = {}
    long: dict[str, Any] = {}
    threshold: int | None = None
    unmetered: list[str] = []
    for key, value in sorted(model_price.__dict__.items()):
        if value is None or key.startswith("_"):
            continue
        if key in UNMETERED_KEYS:
            unmetered.append(UNMETERED_KEYS[key])
            continue
        part = CATALOGUE_PARTS.get(key)
        if part is None:
            raise GenerationError(f"{where}: price key {key!r} is not mapped; extend generate_prices.py")
        if isinstance(value, TieredPrices):
            if len(value.tiers) != 1 or (threshold is not None and value.tiers[0].start != threshold):
                raise GenerationError(f"{where}: only one shared context-length tier is supported")
            threshold = value.tiers[0].start
            base[part] = fmt(price(value.base, where))
            long[part] = fmt(price(value.tiers[0].price, where))
        else:
            base[part] = fmt(price(value, where))
    if long:
        if set(long) != set(base):
            raise GenerationError(f"{where}: a context-length tier must price every part")
        base["long_context"] = {"above_input_tokens": threshold, **long}
    return base, unmetered


def clause_literals(clause: Any) -> Iterator[str]:
    for attr in ("equals", "starts_with", "ends_with", "contains"):
        value = getattr(clause, attr, None)
        if isinstance(value, str):
            yield value
    for attr in ("or_", "and_"):
        for sub in getattr(clause, attr, None) or ():
            yield from clause_literals(sub)


def alias_candidates(model: Any, key: str) -> set[str]:
    provider = key.partition(".")[0]
    found: set[str] = set()
    for literal in clause_literals(model.match):
        text = literal.lower().lstrip("/")
        head, dot, rest = text.partition(".")
        if dot and head in CATALOGUE_GEO_PREFIXES:
            text = rest
        if text.partition(".")[0] == provider and "." in text and text != key:
            found.add(text)
    return found


def entries_from_catalogue(inputs: Inputs) -> tuple[dict[str, dict[str, Any]], dict[str, set[str]]]:
    entries: dict[str, dict[str, Any]] = {}
    aliases: dict[str, set[str]] = {}
    tag = f"genai-prices {inputs.genai_prices_version}"
    for model in inputs.aws_models:
        set_name, key = split_catalogue_id(model.id.lower())
        model_price, effective_from = latest_price(model)
        price_set, unmetered = price_set_from(model_price, f"catalogue {model.id}")
        entry = entries.setdefault(key, {"sources": []})
        if set_name in entry:
            raise GenerationError(f"catalogue has two {set_name!r} entries for {key}")
        entry[set_name] = price_set
        entry["sources"].append(f"{tag}: aws/{model.id}")
        if model.name and ("name" not in entry or set_name == "prices"):
            # The in-Region entry's name has no "(global)" suffix.
            entry["name"] = model.name
        if unmetered:
            entry["unmetered"] = sorted(set(entry.get("unmetered", [])) | set(unmetered))
        if effective_from:
            entry["effective_from"] = max(entry.get("effective_from", ""), effective_from)
        for alias in alias_candidates(model, key):
            aliases.setdefault(alias, set()).add(key)
    return entries, aliases


# --- overrides ---


def merge_overrides(entries: dict[str, dict[str, Any]], overrides: Mapping[str, Any]) -> None:
    for key, override in sorted(overrides.get("models", {}).items()):
        where = f"override {key}"
        if key != key.lower():
            raise GenerationError(f"{where}: model ids are lower case")
        source = override.get("source")
        if not isinstance(source, str) or not source:
            raise GenerationError(f"{where}: every override needs a source")
        unknown = set(override) - {"name", "source", "regions", "images", *PRICE_SETS, *UNIT_KEYS}
        if unknown:
            raise GenerationError(f"{where}: unknown fields {sorted(unknown)}")
        entry = entries.setdefault(key, {"sources": []})
        entry["sources"].append(f"override: {source}")
        if "name" in override:
            entry["name"] = override["name"]
        for set_name in PRICE_SETS:
            if set_name in override:
                merged = dict(entry.get(set_name, {}))
                merged.update(checked_parts(override[set_name], f"{where} {set_name}", tiered=True))
                long = merged.get(LONG_CONTEXT)
                if long is not None and set(long) - {THRESHOLD} != set(merged) - {LONG_CONTEXT}:
                    # As for the catalogue's tiers: above the threshold every part has a price.
                    raise GenerationError(f"{where} {set_name}: long_context must price every part")
                entry[set_name] = merged
        for region, parts in override.get("regions", {}).items():
            entry.setdefault("regions", {})[region] = checked_parts(parts, f"{where} {region}")
        if "images" in override:
            entry["images"] = checked_images(override["images"], where)
        for unit in UNIT_KEYS:
            if unit in override:
                entry[unit] = checked_unit(unit, override[unit], f"{where} {unit}")


def checked_parts(parts: Mapping[str, Any], where: str, *, tiered: bool = False) -> dict[str, Any]:
    unknown = set(parts) - set(PARTS) - ({LONG_CONTEXT} if tiered else set())
    if unknown:
        raise GenerationError(f"{where}: unknown parts {sorted(unknown)}")
    out: dict[str, Any] = {
        part: fmt(price(value, f"{where} {part}")) for part, value in parts.items() if part != LONG_CONTEXT
    }
    if LONG_CONTEXT in parts:
        out[LONG_CONTEXT] = checked_long_context(parts[LONG_CONTEXT], f"{where} {LONG_CONTEXT}")
    return out


def checked_long_context(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    threshold = raw.get(THRESHOLD)
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold <= 0:
        raise GenerationError(f"{where}: {THRESHOLD} must be a positive integer")
    return {THRESHOLD: threshold, **checked_parts({k: v for k, v in raw.items() if k != THRESHOLD}, where)}


def checked_images(images: Mapping[str, Any], where: str) -> dict[str, str]:
    for variant in images:
        size, _, quality = variant.partition("/")
        width, _, height = size.partition("x")
        flat = variant == "*"
        if not flat and not (width.isdigit() and height.isdigit() and quality.isalpha()):
            raise GenerationError(f"{where}: image variant {variant!r} is not 'WxH/quality' or '*'")
    return {variant: fmt(price(value, f"{where} {variant}")) for variant, value in images.items()}


UNIT_PARTS: dict[str, set[str] | None] = {
    "video_seconds": None,  # resolution names ("720p") or "*"
    "audio": {"input", "output"},
    "input_media_seconds": {"video", "audio"},
}


def checked_unit(unit: str, value: Any, where: str) -> Any:
    """A flat unit price (``queries``, ``input_images``) or a map of named prices."""
    allowed = UNIT_PARTS.get(unit, set())
    if allowed == set():
        return fmt(price(value, where))
    if not isinstance(value, Mapping) or not value:
        raise GenerationError(f"{where}: must map names to prices")
    for name in value:
        valid = name in allowed if allowed is not None else (name == "*" or re.fullmatch(r"[0-9]+p", name))
        if not valid:
            raise GenerationError(f"{where}: unknown part {name!r}")
    return {name: fmt(price(v, f"{where} {name}")) for name, v in value.items()}


# --- documented model ids ---


def catalogue_keys(models: Iterable[Any], model_id: str) -> set[str]:
    """Book keys of the catalogue entries whose match rules accept ``model_id`` in any scope form."""
    geos = sorted(CATALOGUE_GEO_PREFIXES - {"regional"})
    forms = [model_id, *(f"{geo}.{model_id}" for geo in geos)]
    return {
        split_catalogue_id(model.id.lower())[1]
        for model in models
        if any(model.match.is_match(form) for form in forms)
    }


def documented_aliases(
    inputs: Inputs, overrides: Mapping[str, Any], entries: Mapping[str, Any]
) -> dict[str, str]:
    """Alias -> key for the overrides' ``aliases`` and every listed ``model_ids`` id not a key.

    A listed id goes to the one entry the catalogue's own match rules give it; none or two is an
    error, so a new id is either resolved as the catalogue resolves it or mapped by hand with a
    source, never guessed.
    """
    out: dict[str, str] = {}
    for alias, spec in sorted(overrides.get("aliases", {}).items()):
        where = f"alias {alias!r}"
        if not isinstance(spec, Mapping) or not spec.get("source"):
            raise GenerationError(f"{where}: every alias needs a model and a source")
        target = spec.get("model")
        if alias != alias.lower() or alias in entries or not isinstance(target, str) or target not in entries:
            raise GenerationError(f"{where}: must be a lower-case id that is not a key, for a key")
        out[alias] = target
    for group in overrides.get("model_ids", []):
        if not group.get("source"):
            raise GenerationError("every model_ids group needs a source")
        for model_id in group["ids"]:
            if model_id != model_id.lower():
                raise GenerationError(f"model id {model_id!r}: model ids are lower case")
            if model_id in entries or model_id in out:
                continue
            keys = catalogue_keys(inputs.aws_models, model_id)
            if len(keys) != 1 or not keys <= set(entries):
                found = sorted(keys) or "no catalogue entry"
                raise GenerationError(f"model id {model_id!r} matches {found}; map it in `aliases`")
            out[model_id] = keys.pop()
    return out


# --- rules ---


def rule_applies(rule: Mapping[str, Any], key: str) -> bool:
    return any(key.startswith(p) for p in rule["applies_to_prefixes"]) and not any(
        key.startswith(p) for p in rule.get("except_prefixes", ())
    )


def scaled(parts: Mapping[str, Any], factor: Decimal) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part, value in parts.items():
        if part == "long_context":
            out[part] = {
                k: (v if k == "above_input_tokens" else fmt(EXACT.multiply(Decimal(v), factor)))
                for k, v in value.items()
            }
        else:
            out[part] = fmt(EXACT.multiply(Decimal(value), factor))
    return out


def divided(parts: Mapping[str, Any], factor: Decimal, where: str) -> dict[str, Any]:
    try:
        return scaled(parts, EXACT.divide(Decimal(1), factor))
    except Inexact as exc:
        raise GenerationError(f"{where}: cannot derive the global price exactly") from exc


def apply_regional_uplift(
    entries: dict[str, dict[str, Any]], rule: Mapping[str, Any], warn: list[str]
) -> None:
    factor = EXACT.add(Decimal(1), EXACT.divide(price(rule["percent"], "regional_uplift"), Decimal(100)))
    for key, entry in sorted(entries.items()):
        if not rule_applies(rule, key):
            continue
        regional, global_ = entry.get("prices"), entry.get("global")
        if global_ is not None and regional is None:
            entry["prices"] = scaled(global_, factor)
            entry["sources"].append("rule: regional_uplift (in-Region/geo = global x 1.1)")
        elif regional is not None and global_ is None:
            try:
                entry["global"] = scaled(regional, EXACT.divide(Decimal(1), factor))
            except (Inexact, Rounded):
                warn.append(f"{key}: regional price has no exact global equivalent; global uses it")
                continue
            entry["sources"].append("rule: regional_uplift (global = in-Region/geo / 1.1)")
        elif regional is not None and global_ is not None and scaled(global_, factor) != regional:
            warn.append(f"{key}: catalogue regional price is not global x {factor}; kept as is")


def apply_derived_part(entries: dict[str, dict[str, Any]], rule: Mapping[str, Any], warn: list[str]) -> None:
    part, times = rule["part"], price(rule["times_input"], f"derived {rule['part']}")
    if part not in PARTS:
        raise GenerationError(f"derived_parts: unknown part {part!r}")
    for key, entry in sorted(entries.items()):
        if not rule_applies(rule, key):
            continue
        filled = False
        for where, parts in price_sets_for_rules(entry):
            for target in (parts, parts.get("long_context")):
                if target is None or "input" not in target:
                    continue
                expected = fmt(EXACT.multiply(Decimal(target["input"]), times))
                if part not in target:
                    target[part] = expected
                    filled = True
                elif target[part] != expected:
                    warn.append(f"{key} {where}: {part} {target[part]} is not {times} x input; kept as is")
        if filled:
            entry["sources"].append(f"rule: {part} = {fmt(times)} x input")


def price_sets_for_rules(entry: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    # Latency-optimized sets are published without cache prices: rules never invent them.
    for name in ("prices", "global"):
        if name in entry:
            yield name, entry[name]
    yield from sorted(entry.get("regions", {}).items())


# --- the book ---


def build_aliases(
    entries: Mapping[str, Any],
    claimed: Mapping[str, set[str]],
    warn: list[str],
    documented: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Exact alternative ids: documented ids, the catalogue's match literals, each without ``:N``.

    An alias two keys could mean is dropped (the id is then unpriced, never guessed); only the
    catalogue's own ambiguities are worth a warning (``x-v1`` for ``x-v1:0`` and ``x-v1:1`` is not).
    A documented id that ends up dropped is an error.
    """
    documented = documented or {}
    claimed = {alias: set(keys) for alias, keys in claimed.items()}
    unversioned: dict[str, set[str]] = {}
    for alias, key in documented.items():
        claimed.setdefault(alias, set()).add(key)
    for name, key in [*((k, k) for k in entries), *documented.items()]:
        head, sep, last = name.rpartition(":")
        if sep and last.isdigit():
            unversioned.setdefault(head, set()).add(key)
    aliases: dict[str, str] = {}
    for alias in sorted(set(claimed) | set(unversioned)):
        keys = claimed.get(alias, set()) | unversioned.get(alias, set())
        if alias in entries:
            continue
        if len(keys) > 1:
            if len(claimed.get(alias, ())) > 1:
                warn.append(f"alias {alias!r} is claimed by {sorted(keys)}; dropped")
            continue
        aliases[alias] = next(iter(keys))
    for alias, key in documented.items():
        if aliases.get(alias) != key:
            raise GenerationError(f"documented id {alias!r} is also claimed by {sorted(claimed[alias])}")
    return aliases


def check_entry(key: str, entry: Mapping[str, Any]) -> None:
    if not any(name in entry for name in ("prices", "global", "images", *UNIT_KEYS)):
        raise GenerationError(f"{key}: no price at all")
    entry["sources"].sort()


def service_tiers(overrides: Mapping[str, Any]) -> dict[str, str | None]:
    tiers: dict[str, str | None] = {"default": "1"}
    for name, tier in sorted(overrides.get("service_tiers", {}).items()):
        if not tier.get("source"):
            raise GenerationError(f"service tier {name!r} needs a source")
        multiplier = tier.get("multiplier")
        tiers[name] = None if multiplier is None else fmt(price(multiplier, f"tier {name}"))
    return tiers


def build_book(inputs: Inputs) -> tuple[dict[str, Any], list[str]]:
    overrides = json.loads(inputs.overrides_bytes, parse_float=_no_float)
    warn: list[str] = []
    entries, claimed = entries_from_catalogue(inputs)
    merge_overrides(entries, overrides)
    rules = overrides.get("rules", {})
    if "regional_uplift" in rules:
        apply_regional_uplift(entries, rules["regional_uplift"], warn)
    for rule in rules.get("derived_parts", []):
        if not rule.get("source"):
            raise GenerationError(f"derived rule for {rule.get('part')!r} needs a source")
        apply_derived_part(entries, rule, warn)
    for key, entry in entries.items():
        check_entry(key, entry)
    discount = overrides.get("discount", {"percent": "0", "source": "default"})
    if not discount.get("source"):
        raise GenerationError("discount needs a source")
    percent = price(discount["percent"], "discount")
    if percent > 100:
        raise GenerationError("discount percent must be <= 100")
    overrides_hash = hashlib.sha256(inputs.overrides_bytes).hexdigest()
    book: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "currency": "USD",
        "units": dict(UNITS),
        "inputs": {"genai_prices": inputs.genai_prices_version, "overrides_sha256": overrides_hash},
        "discount_percent": fmt(percent),
        "service_tiers": service_tiers(overrides),
        "aliases": build_aliases(entries, claimed, warn, documented_aliases(inputs, overrides, entries)),
        "models": entries,
    }
    content = hashlib.sha256(canonical(book).encode()).hexdigest()[:12]
    book["version"] = (
        f"genai-prices-{inputs.genai_prices_version}+overrides-{overrides_hash[:8]}+book-{content}"
    )
    return book, warn


def canonical(book: Mapping[str, Any]) -> str:
    return json.dumps(book, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def render(book: Mapping[str, Any]) -> str:
    return json.dumps(book, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def _no_float(text: str) -> Decimal:
    raise GenerationError(f"price {text} is a JSON number; write prices as strings")


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the book on disk is stale")
    parser.add_argument("--out", type=Path, default=BOOK_PATH, help="where to write (or check) the book")
    parser.add_argument("--overrides", type=Path, default=OVERRIDES_PATH)
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        book, warnings = build_book(load_inputs(args.overrides))
    except GenerationError as exc:
        print(f"generate_prices: {exc}", file=sys.stderr)
        return 2
    for line in warnings:
        print(f"generate_prices: warning: {line}", file=sys.stderr)
    text = render(book)
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale: run `python scripts/generate_prices.py`", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date ({book['version']})")
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}: {len(book['models'])} models, version {book['version']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
