"""A report as one self-contained HTML page: inline CSS and SVG, no script, no font file and no
external address, so it reads the same on a machine that is offline.

The page has a stacked bar chart of daily cost by principal, the cost by model, and the
report's table. Every string that comes from the ledger is escaped (principal and team names
come from usernames), and a Content-Security-Policy forbids scripts and remote loads besides.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from bedrock_spend_cli.output import iso
from bedrock_spend_cli.report_cmd import FIGURE_COLUMNS, KEY_HEADERS, days, plain, round6, usd, usd6

if TYPE_CHECKING:
    from bedrock_spend_cli.report_cmd import Report, Totals

# Okabe-Ito colours (distinguishable with the common colour-vision deficiencies), yellow left out.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D31", "#4D4D4D")
OTHER_COLOUR = "#B8B8B8"
METER_COLOUR = "#7A8699"

# Chart geometry (SVG user units; the SVG scales to the page width).
WIDTH, HEIGHT = 960, 420
LEFT, RIGHT, TOP, BOTTOM = 84, 16, 16, 64
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
  margin: 24px auto; max-width: 1200px; padding: 0 16px; color: #1f2328; background: #fff; }
h1 { font-size: 1.5rem; margin: 0 0 4px; }
h2 { font-size: 1.15rem; margin: 28px 0 8px; }
.sub { color: #57606a; margin: 0 0 16px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 14px; min-width: 140px; }
.card b { display: block; font-size: 1.2rem; font-variant-numeric: tabular-nums; }
.card span { color: #57606a; font-size: .85rem; }
.warn { border-color: #d4a72c; background: #fff8c5; }
figure { margin: 0; }
figcaption { color: #57606a; font-size: .9rem; margin-top: 4px; }
svg.chart { width: 100%; height: auto; display: block; }
svg text { font-family: inherit; fill: #424a53; }
.legend { list-style: none; padding: 0; margin: 8px 0 0; display: flex; flex-wrap: wrap; gap: 6px 18px; }
.legend li { font-size: .9rem; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 6px; vertical-align: -1px;
  border-radius: 2px; }
table { border-collapse: collapse; width: 100%; font-size: .88rem; }
th, td { padding: 4px 8px; border-bottom: 1px solid #e6e8eb; text-align: left; vertical-align: top; }
th { background: #f6f8fa; position: sticky; top: 0; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.k { white-space: nowrap; }
tfoot td { font-weight: 600; border-top: 2px solid #d0d7de; }
.meter { background: #eef1f4; height: 10px; width: 160px; border-radius: 2px; }
.meter span { display: block; height: 10px; border-radius: 2px; }
.unpriced { color: #9a6700; }
.scroll { overflow-x: auto; }
footer { color: #57606a; font-size: .85rem; margin-top: 28px; }
code { font-size: .85em; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def money(micro: Decimal) -> str:
    return "$" + plain(usd6(micro))


def count(value: int) -> str:
    return f"{value:,}"


@dataclass(frozen=True, slots=True)
class Series:
    """One colour in the chart: a principal, or "other" for the rest."""

    name: str
    colour: str
    members: frozenset[str]


def chart_series(report: Report) -> list[Series]:
    """Principals by cost (highest first), each a colour; past the palette, one "other" series."""
    spend: dict[str, Decimal] = {}
    for (_day, principal), totals in report.daily.items():
        spend[principal] = spend.get(principal, Decimal(0)) + totals.cost_micro_usd
    ranked = sorted(spend, key=lambda p: (-spend[p], p))
    if len(ranked) <= len(PALETTE):
        return [Series(p, c, frozenset([p])) for p, c in zip(ranked, PALETTE, strict=False)]
    keep = len(PALETTE) - 1
    rest = ranked[keep:]
    named = [Series(p, c, frozenset([p])) for p, c in zip(ranked[:keep], PALETTE, strict=False)]
    return [*named, Series(f"other ({len(rest)} principals)", OTHER_COLOUR, frozenset(rest))]


def nice_scale(top: float) -> tuple[float, int, int]:
    """(step, number of steps, decimals) for a y axis reaching at least ``top``."""
    if top <= 0:
        return 1.0, 1, 0
    magnitude = 10 ** math.floor(math.log10(top / 5))
    for factor in (1, 2, 5, 10):
        step = factor * magnitude
        steps = math.ceil(top / step - 1e-9)
        if steps <= 6:
            decimals = max(0, -math.floor(math.log10(step) + 1e-9))
            return step, steps, decimals
    return 10 * magnitude, math.ceil(top / (10 * magnitude)), 0  # pragma: no cover


def _f(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def chart_svg(report: Report, series: Sequence[Series]) -> str:
    """The stacked bar chart of daily priced cost by principal, as inline SVG."""
    all_days = days(report.first, report.last)
    owner = {member: s for s in series for member in s.members}
    per_day: dict[str, dict[str, Totals]] = {}
    for (day, principal), totals in report.daily.items():
        per_day.setdefault(day, {})[principal] = totals
    day_cost = {
        day: sum((t.cost_micro_usd for t in found.values()), Decimal(0)) for day, found in per_day.items()
    }
    top_usd = float(usd(max(day_cost.values(), default=Decimal(0))))
    step, steps, decimals = nice_scale(top_usd)
    axis_top = step * steps
    band = PLOT_W / len(all_days)
    bar = max(band * 0.72, 0.6)
    span_years = report.first.year != report.last.year
    label_width = 74 if span_years else 40
    every = max(1, math.ceil(label_width / band))
    base = TOP + PLOT_H

    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        'aria-labelledby="chart-title chart-desc" preserveAspectRatio="xMidYMid meet">',
        '<title id="chart-title">Daily cost by principal (USD, priced calls)</title>',
        f'<desc id="chart-desc">Stacked bars, one per UTC day from {esc(report.first)} to '
        f"{esc(report.last)}; each colour is a principal. Total {esc(money(report.total.cost_micro_usd))}."
        "</desc>",
    ]
    # Grid lines and y labels.
    for i in range(steps + 1):
        y = base - PLOT_H * i / steps
        value = step * i
        out.append(
            f'<line x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{_f(y)}" y2="{_f(y)}" '
            f'stroke="{"#8c959f" if i == 0 else "#e6e8eb"}" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{LEFT - 8}" y="{_f(y + 4)}" text-anchor="end" font-size="12">'
            f"${value:,.{decimals}f}</text>"
        )
    # Bars: one column per day, a stacked rect per series, each with its own tooltip.
    for index, when in enumerate(all_days):
        key = when.isoformat()
        x = LEFT + index * band + (band - bar) / 2
        found = per_day.get(key, {})
        stacked: dict[Series, tuple[Decimal, int]] = {}
        unpriced = 0
        for principal, totals in found.items():
            s = owner[principal]
            cost, calls = stacked.get(s, (Decimal(0), 0))
            stacked[s] = (cost + totals.cost_micro_usd, calls + totals.calls)
            unpriced += totals.unpriced_calls
        total = day_cost.get(key, Decimal(0))
        calls_that_day = sum(t.calls for t in found.values())
        out.append(
            f'<rect x="{_f(LEFT + index * band)}" y="{TOP}" width="{_f(band)}" height="{PLOT_H}" '
            f'fill="#000" fill-opacity="0"><title>{esc(key)}: {esc(money(total))} priced, '
            f"{count(calls_that_day)} calls, {count(unpriced)} unpriced</title></rect>"
        )
        y = float(base)
        for s in series:
            if s not in stacked or axis_top <= 0:
                continue
            cost, calls = stacked[s]
            if cost <= 0:
                continue
            height = float(usd(cost)) / axis_top * PLOT_H
            y -= height
            out.append(
                f'<rect class="bar" x="{_f(x)}" y="{_f(y)}" width="{_f(bar)}" height="{_f(height)}" '
                f'fill="{s.colour}"><title>{esc(s.name)}, {esc(key)}: {esc(money(cost))} '
                f"({count(calls)} calls)</title></rect>"
            )
        if unpriced:
            out.append(
                f'<circle cx="{_f(x + bar / 2)}" cy="{base + 8}" r="3.5" fill="none" stroke="#9a6700" '
                f'stroke-width="1.5"><title>{esc(key)}: {count(unpriced)} unpriced call(s), cost '
                "unknown, not in the bar</title></circle>"
            )
        if index % every == 0:
            label = key if span_years else key[5:]
            out.append(
                f'<text x="{_f(x + bar / 2)}" y="{base + 26}" text-anchor="middle" font-size="12">'
                f"{esc(label)}</text>"
            )
    if top_usd <= 0:
        out.append(
            f'<text x="{LEFT + PLOT_W / 2}" y="{TOP + PLOT_H / 2}" text-anchor="middle" font-size="16">'
            "no priced cost in this period</text>"
        )
    out.append(
        f'<text x="{LEFT + PLOT_W / 2}" y="{HEIGHT - 8}" text-anchor="middle" font-size="13">Day (UTC)</text>'
    )
    out.append(
        f'<text transform="translate(16 {TOP + PLOT_H / 2}) rotate(-90)" text-anchor="middle" '
        'font-size="13">Cost (USD)</text>'
    )
    out.append("</svg>")
    return "\n".join(out)


def legend(report: Report, series: Sequence[Series]) -> str:
    spend: dict[Series, Decimal] = {}
    for (_day, principal), totals in report.daily.items():
        for s in series:
            if principal in s.members:
                spend[s] = spend.get(s, Decimal(0)) + totals.cost_micro_usd
    items = [
        f'<li><span class="swatch" style="background:{s.colour}"></span>{esc(s.name)} '
        f"<small>{esc(money(spend.get(s, Decimal(0))))}</small></li>"
        for s in series
    ]
    if report.total.unpriced_calls:
        items.append(
            '<li class="unpriced"><span aria-hidden="true">&#9675;</span> day with unpriced calls '
            "(cost unknown, not in the bars)</li>"
        )
    return f'<ul class="legend" aria-label="principals">{"".join(items)}</ul>'


def models_table(report: Report) -> str:
    total = report.total.cost_micro_usd
    ranked = sorted(report.models.items(), key=lambda kv: (-kv[1].cost_micro_usd, -kv[1].calls, kv[0]))
    rows = []
    for model, totals in ranked:
        share = (totals.cost_micro_usd / total * 100) if total > 0 else Decimal(0)
        rows.append(
            "<tr>"
            f'<td class="k">{esc(model)}</td>'
            f'<td class="n">{count(totals.calls)}</td>'
            f'<td class="n">{esc(money(totals.cost_micro_usd))}</td>'
            f'<td class="n">{share:.1f}%</td>'
            f'<td><div class="meter" title="{share:.1f}% of the priced cost"><span style="width:'
            f'{share:.2f}%;background:{METER_COLOUR}"></span></div></td>'
            f'<td class="n">{count(totals.unpriced_calls)}</td>'
            "</tr>"
        )
    return (
        '<div class="scroll"><table aria-label="cost by model"><thead><tr><th>Model (as called)</th>'
        '<th class="n">Calls</th><th class="n">Cost USD</th><th class="n">Share</th><th></th>'
        '<th class="n">Unpriced calls</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table></div>"
    )


def _cell(key: str, value: Any) -> str:
    if key == "cost_usd":
        return f'<td class="n">{esc(plain(round6(value)))}</td>'
    if isinstance(value, int):
        return f'<td class="n">{count(value)}</td>'
    return f'<td class="k">{esc(value) if value != "" else "-"}</td>'


def report_table(report: Report) -> str:
    keys = list(report.group_by)
    head = "".join(f"<th>{esc(KEY_HEADERS[k].title())}</th>" for k in keys)
    head += "".join(
        f'<th class="n">{esc(h.capitalize().replace("usd", "USD"))}</th>' for h, _ in FIGURE_COLUMNS
    )
    # Which version priced a row matters only when the range spans more than one.
    versions = len(report.versions) > 1
    if versions:
        head += "<th>Price book</th>"

    def line(row: dict[str, Any]) -> str:
        cells = "".join(_cell(k, row[k]) for k in keys)
        cells += "".join(_cell(k, row[k]) for _, k in FIGURE_COLUMNS)
        if versions:
            cells += f'<td class="k">{esc(", ".join(row["price_book_versions"]) or "-")}</td>'
        return f"<tr>{cells}</tr>"

    body = "".join(line(row) for row in report.rows())
    foot = line(report.total_row())
    return (
        f'<div class="scroll"><table aria-label="report"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody><tfoot>{foot}</tfoot></table></div>"
    )


def render_html(report: Report, source: str, generated_at: datetime) -> str:
    series = chart_series(report)
    total = report.total
    title = f"Bedrock spend, {report.first} to {report.last}"
    scope = ", principals " + ", ".join(report.principals) if report.principals else ""
    unpriced_card = (
        f'<div class="card warn"><b>{count(total.unpriced_calls)}</b><span>unpriced calls '
        f"({count(total.unpriced_tokens)} tokens, cost unknown)</span></div>"
        if total.unpriced_calls
        else '<div class="card"><b>0</b><span>unpriced calls</span></div>'
    )
    reasons = "".join(
        f"<li>{count(n)} &times; {esc(reason)}</li>" for reason, n in report.unpriced_reasons.most_common()
    )
    unpriced_note = (
        f'<p class="unpriced">Calls without a price are not in any cost figure (never counted as $0): '
        f"{count(total.unpriced_calls)} call(s).</p><ul>{reasons}</ul>"
        if total.unpriced_calls
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>{esc(title)}</title>
<style>{CSS}</style>
</head>
<body>
<header>
<h1>{esc(title)}</h1>
<p class="sub">UTC days, both included{esc(scope)}. Grouped by {esc(", ".join(report.group_by))}.
From the usage ledger <code>{esc(source)}</code>.</p>
<div class="cards">
<div class="card"><b>{esc(money(total.cost_micro_usd))}</b><span>cost of priced calls</span></div>
<div class="card"><b>{count(total.calls)}</b><span>calls</span></div>
{unpriced_card}
<div class="card"><b>{count(len({p for _d, p in report.daily}))}</b><span>principals</span></div>
<div class="card"><b>{count(len(report.models))}</b><span>models</span></div>
<div class="card"><b>{esc(", ".join(report.versions) or "-")}</b><span>price book version(s)</span></div>
</div>
</header>
<main>
<section>
<h2>Daily cost by principal</h2>
<figure>
{chart_svg(report, series)}
<figcaption>Priced cost per UTC day, stacked by principal (hover a bar for its figures).</figcaption>
</figure>
{legend(report, series)}
</section>
<section>
<h2>Cost by model</h2>
{models_table(report)}
</section>
<section>
<h2>By {esc(", ".join(report.group_by))}</h2>
{report_table(report)}
{unpriced_note}
</section>
</main>
<footer>
<p>Generated {esc(iso(generated_at))} by <code>bedrock-spend report</code>. Costs are the ledger's exact
micro-USD sums shown with six decimals, priced by the price book version(s)
{esc(", ".join(report.versions) or "-")}. Tokens: input is non-cached input; cache read and cache
write are counted apart.</p>
</footer>
</body>
</html>
"""
