"""The README's tables and commands say what the template and the Makefile do."""

from __future__ import annotations

import re
from pathlib import Path

from bedrock_spend_local.tables import load_template

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def parameters_table() -> dict[str, str]:
    """Parameter -> default as the README's Parameters table gives them."""
    start = README.index("Parameters (all have defaults):")
    rows: dict[str, str] = {}
    for line in README[start:].splitlines()[2:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        names = re.findall(r"`(\w+)`", cells[0])
        defaults = re.findall(r"`([^`]*)`", cells[1]) if len(cells) > 1 else []
        if names and len(defaults) == len(names):
            rows.update(zip(names, defaults, strict=True))
        elif names:
            rows.update(dict.fromkeys(names, "" if cells[1] == "(empty)" else cells[1]))
    return rows


def test_every_template_parameter_is_in_the_parameters_table_with_its_default() -> None:
    declared = {name: str(spec.get("Default", "")) for name, spec in load_template()["Parameters"].items()}
    documented = parameters_table()
    assert sorted(documented) == sorted(declared), "README's Parameters table and template.yaml differ"
    for name, default in declared.items():
        assert documented[name] == default, f"{name}: README says {documented[name]!r}, template {default!r}"


def test_every_output_is_named_in_the_outputs_line() -> None:
    line = README[README.index("Outputs: ") :].split("\n\n", 1)[0]
    assert sorted(re.findall(r"`(\w+)`", line)) == sorted(load_template()["Outputs"])


def test_every_make_target_the_readme_runs_exists() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, flags=re.MULTILINE))
    used = set(re.findall(r"\bmake ([a-z][\w-]*)", README))
    assert used and used <= targets, f"README runs make targets the Makefile lacks: {sorted(used - targets)}"


def test_every_metric_a_billed_part_emits_is_in_the_metrics_table() -> None:
    from bedrock_spend.domain.parts import PARTS

    table = README[README.index("## Metrics") : README.index("## Reports")]
    documented = set(re.findall(r"^\| ([^|]+) \|", table, flags=re.MULTILINE))
    names = {name for cell in documented for name in re.findall(r"`(\w+)`", cell)}
    emitted = {part.metric for part in PARTS if part.metric}
    assert emitted <= names, f"README's Metrics table lacks {sorted(emitted - names)}"
