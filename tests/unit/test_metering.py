"""The metering use case with in-memory collaborators: no sockets, no moto, no emulator.

Each outcome of a call is driven through :func:`metering.call` and the relaying response
(:class:`RelayResponse`), the way the app serves it: billed, refused by Bedrock, cut short
mid-stream, the connection lost after the request was sent, never reached, the ledger
failing, a budget refusal, the caller going away, the proxy's own deadline.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import anyio
import pytest

from bedrock_spend import metering
from bedrock_spend.aws.profiles import ProfileResolver
from bedrock_spend.domain.errors import (
    BadRequestError,
    BedrockConnectionLostError,
    BedrockNotReachedError,
    BudgetExceededError,
    ForbiddenModelError,
    TooManyInFlightError,
)
from bedrock_spend.domain.prices import load_price_book
from bedrock_spend.domain.usage_record import Caller, UsageRecord
from bedrock_spend.proxy.http import RelayResponse, caller_from, request_context
from bedrock_spend.settings import ProxySettings
from bedrock_spend.transport import native
from bedrock_spend.transport.forwarding import Outbound
from bedrock_spend_local.eventstream import chunk_event, converse_event, exception_event

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
CALLER = Caller(principal_id="User::ana", key_id="kid_0a1b2c3d4e5f", username="ana")
CTX = metering.RequestContext("req-1", datetime(2026, 12, 1, 10, 0, tzinfo=UTC))
# Claude 3 Haiku: $0.25 / $1.25 per 1M input / output tokens.
HAIKU_IN, HAIKU_OUT = Decimal("0.25"), Decimal("1.25")


# --- fakes ---------------------------------------------------------------------------------------


class FakeUpstream:
    def __init__(self, status: int, headers: dict[str, str], parts: list[bytes | Exception]) -> None:
        self.status = status
        self.headers = headers
        self._parts = parts
        self.closed = False
        self.read = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        for part in self._parts:
            if isinstance(part, Exception):
                raise part
            self.read += 1
            await anyio.sleep(0)
            yield part

    async def close(self) -> None:
        self.closed = True


@dataclass
class FakeBedrock:
    answer: FakeUpstream | Exception
    sent: list[Outbound] = field(default_factory=list)

    async def open(self, outbound: Outbound) -> FakeUpstream:
        self.sent.append(outbound)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@dataclass
class FakeLedger:
    spent_micro_usd: Decimal = Decimal(0)
    fail: bool = False
    records: list[UsageRecord] = field(default_factory=list)

    def record(self, record: UsageRecord) -> bool:
        if self.fail:
            raise RuntimeError("ProvisionedThroughputExceededException")
        self.events.append("record")
        self.records.append(record)
        self.spent_micro_usd += record.cost.total if record.cost.priced else 0
        return True

    def month_spend(self, principal_id: str, month: str) -> Decimal:
        return self.spent_micro_usd

    leases: dict[str, int] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)

    def acquire_lease(self, principal_id: str, lease_id: str, *, cap: int, now_ms: int, ttl_ms: int) -> bool:
        if len(self.leases) >= cap:
            return False
        self.leases[lease_id] = now_ms + ttl_ms
        self.events.append("acquire")
        return True

    def release_lease(self, principal_id: str, lease_id: str) -> None:
        del self.leases[lease_id]
        self.events.append("release")


def collaborators(bedrock: FakeBedrock, ledger: FakeLedger | None = None, **settings: Any) -> Any:
    return metering.Collaborators(
        settings=ProxySettings(region="us-east-1", usage_table="t", **settings),
        bedrock=bedrock,  # type: ignore[arg-type]
        ledger=ledger if ledger is not None else FakeLedger(),  # type: ignore[arg-type]
        price_book=load_price_book(),
        profiles=ProfileResolver(static={}, client_factory=lambda: None),
    )


def claude_call(operation: str = "InvokeModel", caller: Caller = CALLER) -> native.BedrockCall:
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50, "messages": []}).encode()
    action = {v: k for k, v in native.ACTIONS.items()}[operation]
    if operation in native.INVOKE_OPERATIONS:
        return native.invoke_call(operation, HAIKU, {"content-type": "application/json"}, body, caller)
    return native.parse_request(native.model_path(HAIKU, action), {}, b'{"messages": []}', caller)


@dataclass
class Served:
    status: int
    headers: dict[str, str]
    body: bytes
    complete: bool


def serve(deps: Any, call: native.BedrockCall, *, caller_leaves_after: int | None = None) -> Served:
    """Run the call and relay its answer to a fake caller, as the app does."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        body_parts = [m for m in sent if m["type"] == "http.response.body"]
        if caller_leaves_after is not None and len(body_parts) >= caller_leaves_after:
            raise OSError("connection reset by peer")
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def run() -> None:
        relay = await metering.call(deps, call, CALLER, CTX)
        await RelayResponse(relay)({"type": "http"}, receive, send)

    anyio.run(run)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    complete = bool(sent) and sent[-1]["type"] == "http.response.body" and not sent[-1]["more_body"]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return Served(start["status"], headers, body, complete)


def claude_json(input_tokens: int, output_tokens: int) -> bytes:
    return json.dumps(
        {"type": "message", "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}
    ).encode()


def claude_stream(input_tokens: int, output_tokens: int) -> list[bytes | Exception]:
    return [
        chunk_event({"type": "message_start", "message": {"usage": {"input_tokens": input_tokens}}}),
        chunk_event({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "hi"}}),
        chunk_event({"type": "message_delta", "usage": {"output_tokens": output_tokens}}),
        chunk_event(
            {
                "type": "message_stop",
                "amazon-bedrock-invocationMetrics": {
                    "inputTokenCount": input_tokens,
                    "outputTokenCount": output_tokens,
                },
            }
        ),
    ]


def micro(input_tokens: int, output_tokens: int) -> Decimal:
    return input_tokens * HAIKU_IN + output_tokens * HAIKU_OUT


EVENT_STREAM = {"content-type": "application/vnd.amazon.eventstream", "x-amzn-requestid": "b-1"}


# --- outcomes ------------------------------------------------------------------------------------


def test_a_billed_call_is_relayed_unchanged_and_recorded_once_with_its_exact_cost() -> None:
    answer = claude_json(1200, 345)
    bedrock = FakeBedrock(FakeUpstream(200, {"content-type": "application/json"}, [answer[:10], answer[10:]]))
    ledger = FakeLedger()
    served = serve(collaborators(bedrock, ledger), claude_call())
    assert (served.status, served.body, served.complete) == (200, answer, True)
    [record] = ledger.records
    assert (record.usage.input_tokens, record.usage.output_tokens) == (1200, 345)
    assert record.cost.priced and record.cost.total == micro(1200, 345)
    assert (record.request_id, record.principal_id, record.stream_error) == ("req-1", "User::ana", None)
    assert bedrock.answer.closed  # type: ignore[union-attr]


def test_the_caller_and_key_are_named_in_the_request_metadata_bedrock_receives() -> None:
    bedrock = FakeBedrock(FakeUpstream(200, {}, [claude_json(1, 1)]))
    serve(collaborators(bedrock), claude_call())
    [outbound] = bedrock.sent
    metadata = json.loads(outbound.headers[native.METADATA_HEADER])
    assert metadata == {"principalId": "User::ana", "keyId": "kid_0a1b2c3d4e5f"}
    assert outbound.path == "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke"


def test_an_event_stream_is_relayed_frame_for_frame_and_metered_from_bedrocks_counts() -> None:
    frames = claude_stream(40, 7)
    bedrock = FakeBedrock(FakeUpstream(200, EVENT_STREAM, frames))
    ledger = FakeLedger()
    served = serve(collaborators(bedrock, ledger), claude_call("InvokeModelWithResponseStream"))
    assert served.body == b"".join(f for f in frames if isinstance(f, bytes))
    assert served.headers["content-type"] == "application/vnd.amazon.eventstream"
    [record] = ledger.records
    assert (record.usage.input_tokens, record.usage.output_tokens, record.stream_error) == (40, 7, None)


def test_frames_split_across_reads_are_still_metered() -> None:
    stream = b"".join(f for f in claude_stream(40, 7) if isinstance(f, bytes))
    pieces: list[bytes | Exception] = [stream[i : i + 7] for i in range(0, len(stream), 7)]
    ledger = FakeLedger()
    serve(
        collaborators(FakeBedrock(FakeUpstream(200, EVENT_STREAM, pieces)), ledger),
        claude_call("ConverseStream"),
    )
    [record] = ledger.records
    assert record.operation == "ConverseStream"


def test_converse_stream_metadata_carries_usage_and_the_tier_bedrock_served() -> None:
    frames: list[bytes | Exception] = [
        converse_event("messageStart", {"role": "assistant"}),
        converse_event("contentBlockDelta", {"delta": {"text": "hi"}, "contentBlockIndex": 0}),
        converse_event("messageStop", {"stopReason": "end_turn"}),
        converse_event(
            "metadata",
            {
                "usage": {"inputTokens": 11, "outputTokens": 3, "totalTokens": 14},
                "metrics": {"latencyMs": 5},
                "serviceTier": {"type": "default"},
            },
        ),
    ]
    ledger = FakeLedger()
    serve(
        collaborators(FakeBedrock(FakeUpstream(200, EVENT_STREAM, frames)), ledger),
        claude_call("ConverseStream"),
    )
    [record] = ledger.records
    assert (record.usage.input_tokens, record.usage.output_tokens, record.service_tier) == (11, 3, "default")
    assert record.cost.total == micro(11, 3)


def test_a_bedrock_error_is_relayed_as_sent_and_not_recorded() -> None:
    body = b'{"message":"Too many requests"}'
    headers = {"content-type": "application/json", "x-amzn-errortype": "ThrottlingException:http://internal"}
    ledger = FakeLedger()
    served = serve(collaborators(FakeBedrock(FakeUpstream(429, headers, [body])), ledger), claude_call())
    assert (served.status, served.body) == (429, body)
    assert served.headers["x-amzn-errortype"].startswith("ThrottlingException")
    assert ledger.records == []


def test_a_mid_stream_exception_is_relayed_and_the_usage_before_it_recorded() -> None:
    frames = [*claude_stream(40, 7)[:2], exception_event("modelStreamErrorException", "model failed")]
    ledger = FakeLedger()
    served = serve(
        collaborators(FakeBedrock(FakeUpstream(200, EVENT_STREAM, frames)), ledger),
        claude_call("ConverseStream"),
    )
    assert served.body.endswith(frames[-1])  # type: ignore[arg-type]
    [record] = ledger.records
    assert record.stream_error == "ModelStreamErrorException"
    assert record.usage.input_tokens == 40


def test_a_connection_lost_mid_answer_cuts_the_answer_short_and_records_what_was_seen() -> None:
    frames = [*claude_stream(40, 7)[:1], BedrockConnectionLostError("reset")]
    ledger = FakeLedger()
    served = serve(
        collaborators(FakeBedrock(FakeUpstream(200, EVENT_STREAM, frames)), ledger),
        claude_call("InvokeModelWithResponseStream"),
    )
    assert not served.complete  # the caller's client sees an incomplete answer, not a clean end
    [record] = ledger.records
    assert (record.stream_error, record.usage.input_tokens) == ("BedrockConnectionLost", 40)


def test_a_connection_lost_after_sending_is_a_502_and_a_recorded_possibly_billed_call() -> None:
    ledger = FakeLedger()
    deps = collaborators(FakeBedrock(BedrockConnectionLostError("reset")), ledger)
    with pytest.raises(BedrockConnectionLostError) as caught:
        serve(deps, claude_call())
    assert caught.value.status == 502
    [record] = ledger.records
    assert record.stream_error == "BedrockConnectionLost"
    assert not record.cost.priced and record.usage.input_tokens is None


def test_bedrock_never_reached_is_a_503_and_not_a_call() -> None:
    ledger = FakeLedger()
    with pytest.raises(BedrockNotReachedError) as caught:
        serve(collaborators(FakeBedrock(BedrockNotReachedError("refused")), ledger), claude_call())
    assert caught.value.status == 503
    assert ledger.records == []


def test_a_failing_ledger_never_fails_the_caller_and_the_record_goes_to_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = FakeLedger(fail=True)
    with caplog.at_level(logging.ERROR):
        served = serve(
            collaborators(FakeBedrock(FakeUpstream(200, {}, [claude_json(5, 6)])), ledger), claude_call()
        )
    assert served.status == 200 and served.complete
    [line] = [r for r in caplog.records if r.getMessage() == "USAGE_RECORD_UNSAVED"]
    assert line.usage_record["usage"]["inputTokens"] == 5  # type: ignore[attr-defined]


def test_a_spent_budget_is_refused_before_bedrock_is_called() -> None:
    bedrock = FakeBedrock(FakeUpstream(200, {}, [claude_json(1, 1)]))
    ledger = FakeLedger(spent_micro_usd=Decimal(1_000_000))
    caller = Caller("User::ana", "kid_0a1b2c3d4e5f", "ana", monthly_budget_usd=Decimal("1"))
    with pytest.raises(BudgetExceededError) as caught:
        anyio.run(metering.call, collaborators(bedrock, ledger), claude_call(caller=caller), caller, CTX)
    assert caught.value.status == 429
    assert (caught.value.spent_usd, caught.value.resets_at) == ("1.00", "2027-01-01T00:00:00Z")
    assert bedrock.sent == []


def test_a_model_outside_the_allow_list_is_refused_before_bedrock_is_called() -> None:
    bedrock = FakeBedrock(FakeUpstream(200, {}, [claude_json(1, 1)]))
    caller = Caller("User::ana", "kid_0a1b2c3d4e5f", "ana", allowed_models=("amazon.*",))
    with pytest.raises(ForbiddenModelError):
        anyio.run(metering.call, collaborators(bedrock), claude_call(caller=caller), caller, CTX)
    assert bedrock.sent == []


def test_when_the_caller_goes_away_bedrock_is_read_to_the_end_for_its_final_counts() -> None:
    upstream = FakeUpstream(200, EVENT_STREAM, claude_stream(40, 7))
    ledger = FakeLedger()
    serve(
        collaborators(FakeBedrock(upstream), ledger),
        claude_call("InvokeModelWithResponseStream"),
        caller_leaves_after=1,
    )
    assert upstream.read == 4  # every frame, though the caller took only the first
    [record] = ledger.records
    assert (record.usage.output_tokens, record.stream_error) == (7, None)


def test_a_call_reaching_the_proxys_deadline_is_recorded_with_what_was_seen() -> None:
    class Stalling(FakeUpstream):
        async def chunks(self) -> AsyncIterator[bytes]:
            yield claude_stream(40, 7)[0]  # type: ignore[misc]
            await anyio.sleep(60)

    ledger = FakeLedger()
    deps = collaborators(
        FakeBedrock(Stalling(200, EVENT_STREAM, [])), ledger, max_call_seconds=0.2, function_timeout=20
    )
    served = serve(deps, claude_call("InvokeModelWithResponseStream"))
    assert not served.complete
    [record] = ledger.records
    assert (record.stream_error, record.usage.input_tokens) == ("ProxyDeadline", 40)


def test_count_tokens_is_forwarded_and_never_recorded() -> None:
    ledger = FakeLedger()
    served = serve(
        collaborators(FakeBedrock(FakeUpstream(200, {}, [b'{"inputTokens": 9}'])), ledger),
        claude_call("CountTokens"),
    )
    assert served.body == b'{"inputTokens": 9}'
    assert ledger.records == []


BUDGETED = Caller("User::ana", "kid_0a1b2c3d4e5f", "ana", monthly_budget_usd=Decimal("5"))


def test_a_budgeted_key_holds_an_in_flight_place_until_its_call_is_recorded() -> None:
    ledger = FakeLedger()
    deps = collaborators(FakeBedrock(FakeUpstream(200, {}, [claude_json(5, 6)])), ledger)

    async def run() -> None:
        relay = await metering.call(deps, claude_call(caller=BUDGETED), BUDGETED, CTX)
        assert len(ledger.leases) == 1  # held while the answer streams
        await RelayResponse(relay)({"type": "http"}, _receive, _discard)

    anyio.run(run)
    assert ledger.events == ["acquire", "record", "release"]
    assert ledger.leases == {}


def test_a_key_at_its_in_flight_cap_waits_then_gets_a_429_and_bedrock_is_not_called() -> None:
    ledger = FakeLedger(leases={"a": 1, "b": 2})
    bedrock = FakeBedrock(FakeUpstream(200, {}, [claude_json(1, 1)]))
    caller = Caller("User::ana", "kid_0a1b2c3d4e5f", "ana", max_in_flight=2)
    deps = collaborators(bedrock, ledger, in_flight_wait_seconds=0.3)
    with pytest.raises(TooManyInFlightError) as caught:
        anyio.run(metering.call, deps, claude_call(caller=caller), caller, CTX)
    assert caught.value.status == 429 and "2 calls in flight" in caught.value.message
    assert bedrock.sent == []


def test_a_refused_budget_gives_its_in_flight_place_back() -> None:
    ledger = FakeLedger(spent_micro_usd=Decimal(5_000_000))
    with pytest.raises(BudgetExceededError):
        anyio.run(
            metering.call,
            collaborators(FakeBedrock(FakeUpstream(200, {}, [])), ledger),
            claude_call(caller=BUDGETED),
            BUDGETED,
            CTX,
        )
    assert ledger.events == ["acquire", "release"] and ledger.leases == {}


def test_keys_without_a_budget_or_a_cap_take_no_place() -> None:
    ledger = FakeLedger()
    serve(collaborators(FakeBedrock(FakeUpstream(200, {}, [claude_json(1, 1)])), ledger), claude_call())
    assert ledger.events == ["record"]


async def _receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


async def _discard(message: dict[str, Any]) -> None:
    return None


def test_a_header_bedrock_could_not_be_sent_is_a_400_naming_it() -> None:
    with pytest.raises(BadRequestError, match="x-amzn-bedrock-trace"):
        native.invoke_call("InvokeModel", HAIKU, {"x-amzn-bedrock-trace": "\x80on"}, b"{}", CALLER)


def test_the_request_context_is_read_as_the_utf8_the_adapter_writes() -> None:
    context = json.dumps({"authorizer": {"principalId": "User::zoë", "username": "zoë"}}, ensure_ascii=False)
    as_asgi_text = context.encode("utf-8").decode("latin-1")
    caller = caller_from(request_context({"x-amzn-request-context": as_asgi_text}))
    assert (caller.principal_id, caller.username) == ("User::zoë", "zoë")
