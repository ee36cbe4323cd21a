"""Coverage of the price book against the dated reference list of Bedrock on-demand model ids."""

from __future__ import annotations

import json
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from bedrock_spend.domain.model_ids import parse_model_id
from bedrock_spend.domain.prices import DEFAULT_BOOK_PATH, load_price_book

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "bedrock-model-reference.json"
TARGET_PERCENT = Decimal(97)  # issue #14: coverage >= 97 % of the reference list
FLOOR_PERCENT = Decimal(97)  # measured 2026-12-01 (139/143); raise it as gaps close, never lower it
TOKEN_PARTS = ("input", "output")


@cache
def reference() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REFERENCE.read_text(encoding="utf-8"))
    return data


@cache
def raw_models() -> dict[str, Any]:
    models: dict[str, Any] = json.loads(Path(DEFAULT_BOOK_PATH).read_text(encoding="utf-8"))["models"]
    return models


def entry_ids(model_id: str) -> set[str | None]:
    """The book entry each scope form of the id resolves to (None when unpriced)."""
    book = load_price_book()
    forms = [model_id, f"us.{model_id}", f"global.{model_id}"]
    found = set()
    for form in forms:
        entry = book.lookup(parse_model_id(form).base_model or "")
        found.add(None if entry is None else entry.model_id)
    return found


def has_price(entry: dict[str, Any], part: str) -> bool:
    if part in TOKEN_PARTS:
        return any(part in entry.get(name, {}) for name in ("prices", "global"))
    if part == "audio":
        return {"input", "output"} <= set(entry.get("audio", {}))
    if part == "input_media_seconds":
        return bool(entry.get(part))
    return part in entry and bool(entry[part])


def uncovered() -> list[str]:
    missing = []
    for model in reference()["models"]:
        (key,) = entry_ids(model["id"])
        entry = raw_models().get(key) if key is not None else None
        if entry is None or not all(has_price(entry, part) for part in model["bills"]):
            missing.append(model["id"])
    return missing


def coverage_percent() -> Decimal:
    total = len(reference()["models"])
    covered = total - len(uncovered())
    return Decimal(100 * covered) / Decimal(total)


def test_reference_list_is_dated_and_sourced() -> None:
    ref = reference()
    assert ref["as_of"] == "2026-12-01"
    assert ref["sources"], "the reference list names its sources"
    ids = [model["id"] for model in ref["models"]]
    assert len(ids) == len(set(ids)), "an id is listed twice"
    for model in ref["models"]:
        assert model["provider"] and model["name"] and model["bills"], model["id"]
        assert set(model["bills"]) <= set(ref["bills"]), model["id"]
        assert model["sources"] and set(model["sources"]) <= set(ref["sources"]), model["id"]


def test_every_listed_id_resolves_to_exactly_one_entry() -> None:
    ambiguous = {}
    unresolved = []
    for model in reference()["models"]:
        found = entry_ids(model["id"])
        if len(found) != 1:
            ambiguous[model["id"]] = sorted(str(key) for key in found)
        elif found == {None} and "gap" not in model:
            unresolved.append(model["id"])
    assert not ambiguous, f"ids whose scope forms resolve to different entries: {ambiguous}"
    assert not unresolved, f"ids with no book entry and no documented gap: {unresolved}"


def test_documented_gaps_are_the_uncovered_ids() -> None:
    gaps = sorted(model["id"] for model in reference()["models"] if "gap" in model)
    assert uncovered() == gaps, "update the reference list's `gap` notes to match the book"


def test_coverage_does_not_fall_below_the_measured_floor() -> None:
    percent = coverage_percent()
    assert percent >= FLOOR_PERCENT, f"coverage {percent:.1f}% < {FLOOR_PERCENT}%; uncovered: {uncovered()}"


def test_coverage_meets_the_issue_target() -> None:
    percent = coverage_percent()
    assert percent >= TARGET_PERCENT, f"coverage {percent:.1f}% < {TARGET_PERCENT}%; uncovered: {uncovered()}"
