"""`bedrock-spend report` on the local stack, and its HTML page in a real headless browser.

Two keys call two models through the local stack over HTTP; the report must print exactly
what the ledger holds, and the HTML report must render in Chromium with its chart visible
(its bars' colours are counted in the screenshot, decoded here without PIL).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bedrock_spend.domain.parts import PARTS
from bedrock_spend_cli.report_cmd import readable_usd
from bedrock_spend_cli.report_html import PALETTE
from bedrock_spend_local.server import LocalStack
from tests.e2e.conftest import Reply, aws_client, cli, emulator_billed, http, mint_key
from tests.helpers import claude_body, usage_records

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"
# Around midnight UTC the calls may fall on two days: the range covers both.
RANGE = ("--from", "yesterday", "--to", "today")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = (
    "no Chromium found (looked for chromium, chromium-browser, google-chrome): install Debian's "
    "with `apt-get install -y --no-install-recommends chromium` to run this test"
)
BROWSER_TIMEOUT = 60


def invoke(stack: LocalStack, key: str, model: str, text: str) -> Reply:
    if model == NOVA:
        body: dict[str, Any] = {
            "messages": [{"role": "user", "content": [{"text": text}]}],
            "inferenceConfig": {"maxTokens": 60},
        }
    else:
        body = claude_body(text)
    return http(
        f"{stack.url}/invoke-model",
        body=json.dumps({"modelId": model, "body": body}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )


@dataclass
class Spent:
    principals: tuple[str, str]
    billed: list[dict[str, Any]]


@pytest.fixture(scope="module")
def spent(stack: LocalStack) -> Spent:
    """Two keys, two models: three calls each, through the API."""
    plan = {
        "dora": [(HAIKU, "one two three"), (HAIKU, "four five"), (NOVA, "six seven eight nine")],
        "ezra": [(NOVA, "ten"), (NOVA, "eleven twelve thirteen fourteen fifteen"), (HAIKU, "sixteen")],
    }
    before = len(emulator_billed(stack))
    for username, calls in plan.items():
        key, _ = mint_key(stack, username)
        for model, text in calls:
            reply = invoke(stack, key, model, text)
            assert reply.status == 200, reply.body
    billed = emulator_billed(stack)[before:]
    assert len(billed) == 6
    return Spent(("User::dora", "User::ezra"), billed)


def ledger_sums(stack: LocalStack, principal: str) -> dict[str, dict[str, Any]]:
    """Per model, straight from the principal's ledger records."""
    dynamodb = aws_client(stack, "dynamodb")
    items = dynamodb.query(
        TableName=stack.tables["UsageTable"],
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": {"S": f"USAGE#{principal}"}},
    )["Items"]
    sums: dict[str, dict[str, Any]] = {}
    for item in usage_records(items):
        row = sums.setdefault(
            item["ModelId"]["S"], {"calls": 0, "input": 0, "output": 0, "cost": Decimal(0), "unpriced": 0}
        )
        row["calls"] += 1
        row["input"] += int(item["InputTokens"]["N"])
        row["output"] += int(item["OutputTokens"]["N"])
        if item["Priced"]["BOOL"]:
            row["cost"] += Decimal(item["CostMicroUsd"]["N"])
        else:
            row["unpriced"] += 1
    return sums


def test_the_report_by_principal_and_model_prints_the_ledgers_exact_totals(
    stack: LocalStack, spent: Spent
) -> None:
    code, out = cli(stack, "report", *RANGE, "--by", "principal,model", "--format", "json")
    assert code == 0, out
    rows = {(r["principal"], r["model"]): r for r in json.loads(out)["rows"]}
    total_cost = Decimal(0)
    for principal in spent.principals:
        for model, want in ledger_sums(stack, principal).items():
            got = rows[(principal, model)]
            assert (got["calls"], got["input_tokens"], got["output_tokens"]) == (
                want["calls"],
                want["input"],
                want["output"],
            )
            assert Decimal(got["cost_micro_usd"]) == want["cost"] > 0
            assert got["unpriced_calls"] == want["unpriced"] == 0
            total_cost += want["cost"]
    # The ledger agrees with what the emulator billed, call by call.
    billed_in = sum(b["input_tokens"] for b in spent.billed)
    mine = [r for key, r in rows.items() if key[0] in spent.principals]
    assert sum(r["input_tokens"] for r in mine) == billed_in

    code, table = cli(stack, "report", *RANGE, "--by", "principal,model")
    assert code == 0
    for principal in spent.principals:
        for model, want in ledger_sums(stack, principal).items():
            [line] = [
                line for line in table.splitlines() if line.startswith(f"{principal}  ") and model in line
            ]
            cost = readable_usd(want["cost"] / Decimal(1_000_000))
            # PRINCIPAL MODEL CALLS <a column per billed part> COST USD ...
            cells = line.split()
            assert cells[2] == str(want["calls"]) and cells[3 + len(PARTS)] == format(cost, "f")

    code, text = cli(stack, "report", *RANGE, "--by", "principal,model", "--format", "csv")
    assert code == 0
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert parsed[-1]["principal"] == "TOTAL"
    assert {(r["principal"], r["model"]) for r in parsed[:-1]} >= {
        (p, m) for p in spent.principals for m in (HAIKU, NOVA)
    }


# --- the browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(INSTALL_HINT)


def headless(browser: str, profile: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *arguments,
        ],
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT,
        check=False,
    )


@dataclass
class Image:
    width: int
    height: int
    channels: int
    pixels: bytes  # rows of width * channels bytes, filters undone

    def colours(self) -> Iterator[tuple[int, int, int]]:
        step = self.channels
        data = self.pixels
        for i in range(0, len(data), step):
            yield data[i], data[i + 1], data[i + 2]


def read_png(path: Path) -> Image:
    """An 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes), with zlib and struct only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset, chunks, header = 8, [], b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        offset += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, (depth, colour_type, interlace)
    channels = 3 if colour_type == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    out = bytearray(stride * height)
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b = previous[i]
                c = previous[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        out[y * stride : (y + 1) * stride] = line
        previous = line
    return Image(width, height, channels, bytes(out))


def rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def test_the_html_report_renders_in_chromium_with_a_visible_chart(
    stack: LocalStack, spent: Spent, browser: str, tmp_path: Path
) -> None:
    page = tmp_path / "report.html"
    code, _ = cli(stack, "report", *RANGE, "--by", "principal,model", "--html", str(page))
    assert code == 0
    screenshot = tmp_path / "report.png"
    shot = headless(
        browser, tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1280,1600", page.as_uri()
    )
    assert screenshot.exists(), shot.stderr[-2000:]

    image = read_png(screenshot)
    assert (image.width, image.height) == (1280, 1600)
    seen = Counter(image.colours())
    # Every principal in the stack (our two, and any other test's) has a colour: the two
    # biggest spenders' bars fill far more pixels than their 12 px legend swatches.
    for colour in PALETTE[:2]:
        assert seen[rgb(colour)] > 2_000, (colour, seen.most_common(8))
    assert len(seen) > 20  # text, grid and bars, not a blank page

    dom = headless(browser, tmp_path / "profile", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert '<svg class="chart"' in dom.stdout
    for principal in spent.principals:
        assert f"<title>{principal}, " in dom.stdout  # a bar of each key's spend is in the DOM
