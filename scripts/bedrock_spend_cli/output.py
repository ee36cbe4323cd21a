"""Rendering rows as an aligned table, JSON or CSV.

Rows are plain dicts of typed values (Decimal, datetime, lists, None); the format decides
how they read: JSON keeps decimals exact as strings and datetimes as ISO 8601.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TextIO

FORMATS = ("table", "json", "csv")


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    key: str
    # Turns the row's value into table/CSV text; the default is :func:`text`.
    show: Callable[[Any], str] | None = None
    align_right: bool = False


def count(value: Any) -> str:
    """A count for people: thousands separated (tables only; CSV and JSON keep plain numbers)."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else text(value)


def iso(value: datetime) -> str:
    value = value.astimezone(UTC) if value.tzinfo else value
    return value.isoformat(timespec="seconds").replace("+00:00", "Z")


def text(value: Any, empty: str = "-") -> str:
    """A cell's text: None and empty values as ``empty``, lists comma-joined."""
    if value is None or value == "" or value == [] or value == ():
        return empty
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(text(v, empty) for v in value)
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"cannot render {type(value).__name__} as JSON")


def dumps(data: Any) -> str:
    return json.dumps(data, default=_json_default, indent=2, ensure_ascii=False)


def render_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """Aligned columns under an underlined header."""
    cells = [[(c.show or text)(row.get(c.key)) for c in columns] for row in rows]
    headers = [c.header for c in columns]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Iterable[str]) -> str:
        parts = [
            v.rjust(w) if c.align_right else v.ljust(w)
            for v, w, c in zip(values, widths, columns, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(headers), line("-" * w for w in widths)]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def render_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([c.header for c in columns])
    for row in rows:
        writer.writerow([text(row.get(c.key), empty="") for c in columns])
    return buffer.getvalue().rstrip("\n")


def emit_rows(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    fmt: str,
    *,
    empty_message: str = "(none)",
    out: TextIO | None = None,
) -> None:
    out = out or sys.stdout
    if fmt == "json":
        print(dumps(list(rows)), file=out)
    elif fmt == "csv":
        print(render_csv(rows, columns), file=out)
    elif rows:
        print(render_table(rows, columns), file=out)
    else:
        print(empty_message, file=out)


def emit_record(
    record: Mapping[str, Any],
    labels: Mapping[str, str],
    fmt: str,
    *,
    shows: Mapping[str, Callable[[Any], str]] | None = None,
    out: TextIO | None = None,
) -> None:
    """One object: ``label  value`` lines for tables, an object for JSON, two rows for CSV."""
    out = out or sys.stdout
    if fmt == "json":
        print(dumps(dict(record)), file=out)
        return
    shows = shows or {}
    columns = [Column(label, key, show=shows.get(key)) for key, label in labels.items()]
    if fmt == "csv":
        print(render_csv([record], columns), file=out)
        return
    width = max(len(label) for label in labels.values())
    for column in columns:
        value = (column.show or text)(record.get(column.key))
        print(f"{column.header.ljust(width)}  {value}".rstrip(), file=out)
