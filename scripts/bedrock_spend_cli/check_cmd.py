"""``bedrock-spend check``: prove a deployed (or local) stack works end to end, in one command.

With temporary keys it mints and revokes itself, it calls every route family once, times the
streams' events (all at once means something on the way buffers), checks the refusals, and
reads the ledger back: every billed call recorded exactly once, with tokens and the cost the
price book gives. Each FAIL names what to look at. Exit status 0 when nothing failed, 3 when a
check failed, 1 when the check could not run, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import ssl
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from bedrock_spend.domain.keys import KeyRecord, utcnow
from bedrock_spend_cli.config import Aws, CliError, Tables, UsageError, aws_error_message
from bedrock_spend_cli.output import Column, dumps, emit_rows, render_table

if TYPE_CHECKING:
    from bedrock_spend.aws.key_store import KeyStore
    from bedrock_spend.domain.prices import PriceBook

AddCommand = Callable[
    ["argparse._SubParsersAction[argparse.ArgumentParser]", str, str, str], argparse.ArgumentParser
]

API_ENDPOINT_ENV = "BEDROCK_SPEND_API_ENDPOINT"
API_ENDPOINT_OUTPUT = "ApiEndpoint"
EXIT_FAILED = 3
# API Gateway's old ceiling for a call: the long call must outlast it to prove STREAM mode.
OLD_LIMIT_SECONDS = 29.0
# Events that all arrive within this window came out of a buffer, not out of a model.
BURST_SECONDS = 0.05
MIN_STREAM_EVENTS = 3
MAX_TOKENS = 100
LONG_MAX_TOKENS = 4096
# A generous bound on each prompt's input tokens, for the estimate stated before the run.
ESTIMATED_INPUT_TOKENS = 100
# Read by the local emulator (it paces its stream events); to a real model, a few words of text.
PACE = "[[emulator chunk_delay_ms=40]]"
LONG_PACE = "[[emulator chunk_delay_ms=4000]]"
STREAM_PROMPT = f"Count from 1 to 30, separated by spaces. {PACE}"
PROMPT = "Say hello in one short sentence."
LONG_PROMPT = f"Write the numbers from one to two thousand in words, one per line. {LONG_PACE}"
# A model id the allow-list key does not allow (refused before Bedrock is called).
OTHER_MODELS = ("amazon.titan-text-lite-v1", "anthropic.claude-3-haiku-20240307-v1:0")
# Families whose native InvokeModel body the check can write (auto-selection picks among them).
NATIVE_FAMILIES = ("anthropic", "nova", "titan-text", "llama", "mistral", "openai-style")
OPENAI_PATH = "/openai/v1/chat/completions"


class Status(StrEnum):
    PASS = "PASS"  # noqa: S105 - a verdict, not a password
    FAIL = "FAIL"
    SKIP = "SKIP"


class Cause(StrEnum):
    """What a FAIL points at; each has a hint in :data:`LOOK_AT`."""

    ENDPOINT = "endpoint"
    MODEL_ACCESS = "IAM / Bedrock model access"
    STREAM_MODE = "STREAM mode / LWA"
    LWA = "LWA layer"
    SNAPSTART = "SnapStart / cold start"
    AUTHORIZER = "authorizer"
    AUTHORIZER_TTL = "authorizer TTL"
    THROTTLING = "Bedrock quotas"
    LEDGER = "ledger"
    PROXY = "proxy"


LOOK_AT: dict[Cause, str] = {
    Cause.ENDPOINT: "the endpoint URL and TLS trust (--endpoint, --ca-bundle or AWS_CA_BUNDLE)",
    Cause.MODEL_ACCESS: (
        "IAM: the proxy role's bedrock:InvokeModel* on this model kind (foundation-model and "
        "inference-profile ARNs); Bedrock model access for this model in this Region"
    ),
    Cause.STREAM_MODE: (
        "STREAM mode: the routes' integrations need responseTransferMode STREAM and the proxy "
        "AWS_LWA_INVOKE_MODE=response_stream (LWA layer); or a buffering proxy/CDN on the way"
    ),
    Cause.LWA: (
        "LWA layer: the proxy function's log (WebAdapterLayerVersion, arm64 layer, "
        "AWS_LWA_INVOKE_MODE, run.sh); the app did not answer the adapter"
    ),
    Cause.SNAPSTART: (
        "SnapStart: the proxy did not start answering in time (published version and alias "
        "live, restore errors in the proxy's log, ProxyTimeoutSeconds)"
    ),
    Cause.AUTHORIZER: "the authorizer function's log and the ApiKeyTable it reads",
    Cause.AUTHORIZER_TTL: "authorizer TTL: AuthorizerCacheTtl (a revoked key works until it expires)",
    Cause.THROTTLING: "Bedrock quotas for this model (ThrottlingException); retry later",
    Cause.LEDGER: (
        "the ledger: UsageTable, the proxy role's DynamoDB permissions, USAGE_RECORD_UNSAVED "
        "lines in the proxy's log (bedrock-spend ledger replay)"
    ),
    Cause.PROXY: "the proxy function's log",
}


@dataclass
class Result:
    check: str
    status: Status
    detail: str
    cause: Cause | None = None
    measured: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "status": self.status.value,
            "detail": self.detail,
            "cause": self.cause.value if self.cause else None,
            "look_at": LOOK_AT[self.cause] if self.cause and self.status is Status.FAIL else None,
            **({"measured": self.measured} if self.measured else {}),
        }


@dataclass
class Reply:
    """One HTTP answer: status, headers (lower-case names), body, and when it came."""

    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def request_id(self) -> str:
        # API Gateway's request id: the one the ledger records (Bedrock's is remapped).
        return self.headers.get("x-amzn-requestid", "")

    def error(self) -> tuple[str, str, bool]:
        """(error type, message, from Bedrock): the proxy's and the gateway's errors carry an
        ``error`` member; Bedrock's own are relayed as ``{"message"}`` with x-amzn-errortype."""
        body = self.json()
        body = body if isinstance(body, dict) else {}
        own = body.get("error")
        if isinstance(own, dict):
            return str(own.get("type") or ""), str(own.get("message") or ""), False
        kind = self.headers.get("x-amzn-errortype", "").split(":")[0]
        return kind, str(body.get("message") or body.get("Message") or self.body[:200]), True


@dataclass
class StreamReply:
    reply: Reply
    arrivals: list[float]  # seconds after the request, one per event-stream message
    event_types: list[str]
    stream_error: str | None = None


@dataclass
class Call:
    """A billed call of the run, to be found in the ledger."""

    check: str
    request_id: str
    model_id: str


@dataclass
class Minted:
    role: str
    record: KeyRecord
    key: str
    revoked: bool = False


# --- HTTP ---------------------------------------------------------------------------------------


class Api:
    """The stack's API over HTTPS, trusting ``ca_bundle`` when given."""

    def __init__(self, endpoint: str, ca_bundle: str | None, timeout: float) -> None:
        import httpx

        self.endpoint = endpoint.rstrip("/")
        verify: ssl.SSLContext | bool = True
        if ca_bundle:
            verify = ssl.create_default_context(cafile=ca_bundle)
        self.client = httpx.Client(verify=verify, timeout=httpx.Timeout(timeout, connect=10.0))

    def close(self) -> None:
        self.client.close()

    def _headers(self, key: str | None, accept: str = "application/json") -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": accept}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def post(self, path: str, body: Any, key: str | None) -> Reply:
        started = time.monotonic()
        response = self.client.post(
            self.endpoint + path, content=json.dumps(body).encode(), headers=self._headers(key)
        )
        return Reply(
            response.status_code,
            {k.lower(): v for k, v in response.headers.items()},
            response.content,
            time.monotonic() - started,
        )

    def stream(self, path: str, body: Any, key: str) -> StreamReply:
        """Post and read an event stream, noting when each message arrives."""
        from botocore.eventstream import EventStreamBuffer

        started = time.monotonic()
        headers = self._headers(key, accept="application/vnd.amazon.eventstream")
        arrivals: list[float] = []
        types: list[str] = []
        error: str | None = None
        with self.client.stream(
            "POST", self.endpoint + path, content=json.dumps(body).encode(), headers=headers
        ) as response:
            names = {k.lower(): v for k, v in response.headers.items()}
            if response.status_code != 200:
                body_bytes = response.read()
                reply = Reply(response.status_code, names, body_bytes, time.monotonic() - started)
                return StreamReply(reply, [], [])
            buffer = EventStreamBuffer()
            for data in response.iter_raw():
                now = time.monotonic() - started
                buffer.add_data(data)
                message: Any
                for message in buffer:
                    arrivals.append(now)
                    kind = str(message.headers.get(":message-type", "event"))
                    if kind != "event":
                        error = str(
                            message.headers.get(":exception-type") or message.headers.get(":error-code")
                        )
                    types.append(str(message.headers.get(":event-type", kind)))
        reply = Reply(200, names, b"", time.monotonic() - started)
        return StreamReply(reply, arrivals, types, error)


# --- request bodies ---------------------------------------------------------------------------


def native_body(family: str, prompt: str, max_tokens: int) -> dict[str, Any] | None:
    """The model family's own InvokeModel body; None when the check knows no body for it."""
    if family == "anthropic":
        return {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
        }
    if family == "nova":
        return {
            "schemaVersion": "messages-v1",
            "messages": [{"role": "user", "content": [{"text": prompt}]}],
            "inferenceConfig": {"maxTokens": max_tokens},
        }
    if family == "titan-text":
        return {"inputText": prompt, "textGenerationConfig": {"maxTokenCount": max_tokens}}
    if family == "llama":
        return {"prompt": prompt, "max_gen_len": max_tokens}
    if family == "mistral":
        return {"prompt": f"<s>[INST] {prompt} [/INST]", "max_tokens": max_tokens}
    if family == "openai-style":
        return {"messages": [{"role": "user", "content": prompt}], "max_completion_tokens": max_tokens}
    return None


def converse_body(prompt: str, max_tokens: int) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": [{"text": prompt}]}],
        "inferenceConfig": {"maxTokens": max_tokens},
    }


def model_path(model_id: str, operation: str) -> str:
    return f"/model/{quote(model_id, safe='')}/{operation}"


# --- the plan and its cost --------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    check: str
    max_tokens: int


def plan(family: str, long: bool) -> list[Planned]:
    """The billed calls of a run (the OpenAI-compatible probe is billed only where it exists)."""
    calls = [Planned("converse", MAX_TOKENS), Planned("converse-stream", MAX_TOKENS)]
    if native_body(family, PROMPT, MAX_TOKENS) is not None:
        calls = [
            Planned("invoke-model", MAX_TOKENS),
            Planned("invoke", MAX_TOKENS),
            *calls,
            Planned("invoke-with-response-stream", MAX_TOKENS),
        ]
    calls.append(Planned("openai-chat", MAX_TOKENS))
    if long:
        calls.append(Planned("long-call", LONG_MAX_TOKENS))
    return calls


def estimate_micro_usd(
    book: PriceBook, model_id: str, region: str, planned: Sequence[Planned]
) -> Decimal | None:
    """The most the planned calls can cost (every call using its max tokens); None if unpriced."""
    from bedrock_spend.domain.model_ids import InvalidModelIdError, parse_model_id
    from bedrock_spend.domain.usage import Usage

    try:
        ref = parse_model_id(model_id)
    except InvalidModelIdError:
        return None
    total = Decimal(0)
    for call in planned:
        cost = book.price(
            Usage(input_tokens=ESTIMATED_INPUT_TOKENS, output_tokens=call.max_tokens, source="estimate"),
            ref,
            region=region,
        )
        if not cost.priced:
            return None
        total += cost.total
    return total


def usd(micro: Decimal) -> str:
    return f"${(micro / Decimal(1_000_000)).quantize(Decimal('0.000001'))}"


# --- choosing the model -----------------------------------------------------------------------


def cheapest_model(aws: Aws, book: PriceBook, region: str) -> str:
    """The cheapest text model the account lists that streams and that the check can call."""
    from bedrock_spend.domain.model_ids import family, parse_model_id

    bedrock = aws.client("bedrock")
    try:
        summaries = bedrock.list_foundation_models(byOutputModality="TEXT").get("modelSummaries", [])
        profiles = _inference_profiles(bedrock)
    except Exception as exc:
        message = aws_error_message(exc, aws.endpoint_url)
        if message is None:
            raise
        raise UsageError(f"cannot list the account's models ({message}): pass --model MODEL_ID") from exc
    candidates: list[str] = []
    for summary in summaries:
        if summary.get("modelLifecycle", {}).get("status", "ACTIVE") != "ACTIVE":
            continue
        if not summary.get("responseStreamingSupported") or "TEXT" not in summary.get("inputModalities", []):
            continue
        model_id = str(summary["modelId"])
        if family(parse_model_id(model_id)) not in NATIVE_FAMILIES:
            continue
        if "ON_DEMAND" in summary.get("inferenceTypesSupported", []):
            candidates.append(model_id)
        candidates.extend(p for p in profiles.get(model_id, ()) if p not in candidates)
    planned = plan("anthropic", long=False)
    priced = [
        (cost, model_id)
        for model_id in candidates
        if (cost := estimate_micro_usd(book, model_id, region, planned)) is not None
    ]
    if not priced:
        raise UsageError(
            "no priced text model that streams is listed for this account: pass --model MODEL_ID"
        )
    return min(priced)[1]


def _inference_profiles(bedrock: Any) -> dict[str, list[str]]:
    """Base model id -> system inference profile ids that route to it."""
    found: dict[str, list[str]] = {}
    for page in bedrock.get_paginator("list_inference_profiles").paginate(typeEquals="SYSTEM_DEFINED"):
        for profile in page.get("inferenceProfileSummaries", []):
            for model in profile.get("models", []):
                base = str(model.get("modelArn", "")).rsplit("/", 1)[-1]
                found.setdefault(base, []).append(str(profile["inferenceProfileId"]))
    return found


# --- the run ----------------------------------------------------------------------------------


def failure(check: str, reply: Reply, expected: str = "200") -> Result:
    """A FAIL for an unexpected answer, with the cause its status and error type point at."""
    kind, message, from_bedrock = reply.error()
    detail = f"HTTP {reply.status} {kind or '-'}: {message[:160]} (expected {expected})"
    if (from_bedrock and reply.status == 403) or (
        from_bedrock
        and kind in ("ResourceNotFoundException", "ValidationException")
        and reply.status in (400, 404)
    ):
        cause = Cause.MODEL_ACCESS
    elif kind == "ThrottlingException":
        cause = Cause.THROTTLING
    elif reply.status in (401, 403):
        cause = Cause.AUTHORIZER
    elif reply.status == 504 and not from_bedrock:
        cause = Cause.SNAPSTART
    elif reply.status == 502 and kind.startswith("InternalServerError"):
        cause = Cause.LWA
    else:
        cause = Cause.PROXY
    return Result(check, Status.FAIL, detail, cause)


class Run:
    """One check run: its keys, calls and results. Keys are revoked by :meth:`cleanup`."""

    def __init__(
        self,
        api: Api,
        model_id: str,
        family: str,
        store: KeyStore | None,
        progress: Callable[[str], None],
    ) -> None:
        self.api = api
        self.model_id = model_id
        self.family = family
        self.store = store
        self.progress = progress
        self.results: list[Result] = []
        self.calls: list[Call] = []
        self.keys: list[Minted] = []
        self.run_id = uuid.uuid4().hex[:10]
        self.started_at = utcnow()

    # keys

    def mint(self, role: str, **fields: Any) -> Minted:
        from bedrock_spend.domain.keys import hash_key, mint_key, new_key_id

        assert self.store is not None
        key = mint_key()
        now = utcnow()
        record = KeyRecord(
            key_hash=hash_key(key),
            key_id=new_key_id(),
            username=f"bedrock-spend-check-{self.run_id}",
            created_at=now,
            team="bedrock-spend-check",
            # A safety net: the key dies within the hour even if the run is killed.
            expires_at=now + timedelta(hours=1),
            description=f"temporary key of bedrock-spend check ({role})",
            **fields,
        )
        self.store.create(record)
        minted = Minted(role, record, key)
        self.keys.append(minted)
        return minted

    def revoke(self, minted: Minted) -> None:
        if minted.revoked or self.store is None:
            return
        self.store.save(minted.record.revoke(utcnow()))
        minted.revoked = True

    def cleanup(self) -> list[str]:
        """Revoke every key the run minted; the errors, if any (the run's result stands)."""
        errors = []
        for minted in self.keys:
            try:
                self.revoke(minted)
            # One key failing must not leave the others active; the error is reported.
            except Exception as exc:  # noqa: BLE001
                message = aws_error_message(exc) or f"{type(exc).__name__}: {exc}"
                errors.append(f"key {minted.record.key_id} ({minted.role}) not revoked: {message}")
        return errors

    # results

    def add(self, result: Result) -> Result:
        self.results.append(result)
        cause = f"  -> {result.cause.value}" if result.cause and result.status is Status.FAIL else ""
        self.progress(f"{result.status.value:<4}  {result.check}: {result.detail}{cause}")
        return result

    def call(self, check: str, path: str, body: Any, key: str | None, billed: bool = True) -> Reply | None:
        """POST and note the billed call; None (and a FAIL) when the endpoint cannot be reached."""
        import httpx

        try:
            reply = self.api.post(path, body, key)
        except httpx.HTTPError as exc:
            self.add(Result(check, Status.FAIL, f"no answer: {type(exc).__name__}: {exc}", Cause.ENDPOINT))
            return None
        if billed and reply.status == 200:
            self.calls.append(Call(check, reply.request_id, self.model_id))
        return reply

    # the checks

    def routes(self, key: str) -> None:
        native = native_body(self.family, PROMPT, MAX_TOKENS)
        requests: list[tuple[str, str, Any]] = []
        if native is not None:
            requests += [
                ("invoke-model", "/invoke-model", {"modelId": self.model_id, "body": native}),
                ("invoke", model_path(self.model_id, "invoke"), native),
            ]
        else:
            for name in ("invoke-model", "invoke"):
                self.add(Result(name, Status.SKIP, f"no request body known for model family {self.family!r}"))
        requests.append(
            ("converse", model_path(self.model_id, "converse"), converse_body(PROMPT, MAX_TOKENS))
        )
        for name, path, body in requests:
            reply = self.call(name, path, body, key)
            if reply is None:
                continue
            if reply.status != 200:
                self.add(failure(name, reply))
            else:
                self.add(
                    Result(
                        name,
                        Status.PASS,
                        f"200 in {reply.seconds:.2f} s",
                        measured={"seconds": reply.seconds},
                    )
                )

    def streams(self, key: str) -> None:
        native = native_body(self.family, STREAM_PROMPT, MAX_TOKENS)
        if native is not None:
            self.stream_check("invoke-with-response-stream", native, key)
        else:
            self.add(
                Result(
                    "invoke-with-response-stream", Status.SKIP, f"no request body known for {self.family!r}"
                )
            )
        self.stream_check("converse-stream", converse_body(STREAM_PROMPT, MAX_TOKENS), key)

    def stream_check(self, name: str, body: Any, key: str) -> None:
        answer = self.streamed(name, name, body, key)
        if answer is not None:
            self.add(judge_stream(name, answer))

    def streamed(self, name: str, operation: str, body: Any, key: str) -> StreamReply | None:
        """A streamed call read to its end; None (and a FAIL) unless it was answered with 200."""
        import httpx

        try:
            answer = self.api.stream(model_path(self.model_id, operation), body, key)
        except httpx.HTTPError as exc:
            detail = f"stream broke: {type(exc).__name__}: {exc}"
            self.add(Result(name, Status.FAIL, detail, Cause.STREAM_MODE))
            return None
        if answer.reply.status != 200:
            self.add(failure(name, answer.reply))
            return None
        self.calls.append(Call(name, answer.reply.request_id, self.model_id))
        return answer

    def count_tokens(self, key: str) -> None:
        body = {"input": {"converse": {"messages": converse_body(PROMPT, MAX_TOKENS)["messages"]}}}
        reply = self.call("count-tokens", model_path(self.model_id, "count-tokens"), body, key, billed=False)
        if reply is None:
            return
        kind, message, from_bedrock = reply.error()
        if reply.status == 200:
            tokens = (reply.json() or {}).get("inputTokens")
            self.add(Result("count-tokens", Status.PASS, f"200, {tokens} input tokens (not billed)"))
        elif from_bedrock and kind == "ValidationException":
            self.add(Result("count-tokens", Status.SKIP, f"the model does not count tokens: {message[:120]}"))
        else:
            self.add(failure("count-tokens", reply))

    def openai(self, key: str) -> None:
        body = {
            "model": self.model_id,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": MAX_TOKENS,
        }
        reply = self.call("openai-chat", OPENAI_PATH, body, key)
        if reply is None:
            return
        kind, _, from_bedrock = reply.error()
        if reply.status == 200:
            self.add(Result("openai-chat", Status.PASS, f"200 in {reply.seconds:.2f} s"))
        elif not from_bedrock and (reply.status == 404 or kind.startswith("MissingAuthenticationToken")):
            self.add(
                Result("openai-chat", Status.SKIP, f"route {OPENAI_PATH} not deployed (HTTP {reply.status})")
            )
        elif from_bedrock and kind in ("ValidationException", "ResourceNotFoundException"):
            # Bedrock serves only some models on its OpenAI-compatible API: not a failure here.
            self.add(Result("openai-chat", Status.SKIP, f"{kind}: the model is not served on this API"))
        else:
            self.add(failure("openai-chat", reply))

    def long_call(self, key: str) -> None:
        name = "long-call"
        self.progress(
            f"....  {name}: one stream of up to {LONG_MAX_TOKENS} tokens, past {OLD_LIMIT_SECONDS:.0f} s"
        )
        body = converse_body(LONG_PROMPT, LONG_MAX_TOKENS)
        answer = self.streamed(name, "converse-stream", body, key)
        if answer is None:
            return
        seconds = answer.reply.seconds
        measured = {"seconds": round(seconds, 3), "events": len(answer.arrivals)}
        if answer.stream_error or "metadata" not in answer.event_types:
            what = answer.stream_error or "no final metadata event"
            detail = f"ended after {seconds:.1f} s without its end ({what})"
            self.add(Result(name, Status.FAIL, detail, Cause.STREAM_MODE, measured))
        elif seconds <= OLD_LIMIT_SECONDS:
            detail = f"complete in {seconds:.1f} s: too fast to prove calls past {OLD_LIMIT_SECONDS:.0f} s"
            self.add(Result(name, Status.SKIP, detail, measured=measured))
        else:
            self.add(Result(name, Status.PASS, f"complete after {seconds:.1f} s", measured=measured))

    def refusals(self, store_ready: bool, authorizer_ttl: int, wait_revocation: bool) -> None:
        body = {"modelId": self.model_id, "body": native_body(self.family, PROMPT, 1) or {}}
        reply = self.call("refuse: no key", "/invoke-model", body, None, billed=False)
        if reply is not None:
            self.add(expect_refusal("refuse: no key", reply, 401, "Unauthorized"))
        if not store_ready:
            for name in ("refuse: revoked key", "refuse: model not allowed", "refuse: over budget"):
                self.add(Result(name, Status.SKIP, "needs the key table to mint a key (--keys-table)"))
            return
        revoked = self.mint("revoked")
        self.revoke(revoked)
        reply = self.call("refuse: revoked key", "/invoke-model", body, revoked.key, billed=False)
        if reply is not None:
            self.add(expect_refusal("refuse: revoked key", reply, 403, "AccessDeniedException"))
        # Allowed this model only, with a budget of $0: both refusals happen before Bedrock.
        narrow = self.mint("refusals", allowed_models=(self.model_id,), monthly_budget_usd=Decimal(0))
        other = next(m for m in OTHER_MODELS if m != self.model_id)
        other_body = {"modelId": other, "body": native_body(self.family, PROMPT, 1) or {}}
        reply = self.call("refuse: model not allowed", "/invoke-model", other_body, narrow.key, billed=False)
        if reply is not None:
            self.add(expect_refusal("refuse: model not allowed", reply, 403, "ModelNotAllowed"))
        reply = self.call("refuse: over budget", "/invoke-model", body, narrow.key, billed=False)
        if reply is not None:
            self.add(expect_refusal("refuse: over budget", reply, 429, "BudgetExceeded"))
        self.revocation(narrow, other_body, authorizer_ttl, wait_revocation)

    def revocation(self, minted: Minted, body: Any, authorizer_ttl: int, wait: bool) -> None:
        """A key revoked after use: refused at once, or within the authorizer's cache TTL."""
        name = "refuse: revoked while cached"
        self.revoke(minted)
        deadline = time.monotonic() + (authorizer_ttl + 10 if wait else 0)
        waited = time.monotonic()
        while True:
            # The refusals key's allow-list refuses this model: never a Bedrock call.
            reply = self.call(name, "/invoke-model", body, minted.key, billed=False)
            if reply is None:
                return
            kind, _, _ = reply.error()
            if reply.status == 403 and kind == "AccessDeniedException":
                after = time.monotonic() - waited
                self.add(
                    Result(name, Status.PASS, f"403 AccessDeniedException {after:.0f} s after revocation")
                )
                return
            if not (reply.status == 403 and kind == "ModelNotAllowed"):
                self.add(failure(name, reply, "403 AccessDeniedException"))
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(5)
        if wait:
            detail = (
                f"still accepted {time.monotonic() - waited:.0f} s after revocation (TTL {authorizer_ttl} s)"
            )
            self.add(Result(name, Status.FAIL, detail, Cause.AUTHORIZER_TTL))
        else:
            detail = (
                f"still accepted from the authorizer cache, as designed: it stops within the TTL "
                f"({authorizer_ttl} s; --wait-revocation waits for it)"
            )
            self.add(Result(name, Status.SKIP, detail))


def judge_stream(name: str, answer: StreamReply) -> Result:
    """PASS when the events arrived spread out, as the model made them; FAIL when all at once."""
    arrivals = answer.arrivals
    if answer.stream_error:
        return Result(name, Status.FAIL, f"the stream ended in an error: {answer.stream_error}", Cause.PROXY)
    if len(arrivals) < MIN_STREAM_EVENTS:
        return Result(name, Status.FAIL, f"only {len(arrivals)} events: too few to judge", Cause.STREAM_MODE)
    first, spread = arrivals[0], arrivals[-1] - arrivals[0]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    measured = {
        "events": len(arrivals),
        "first_event_seconds": round(first, 3),
        "spread_seconds": round(spread, 3),
        "largest_gap_seconds": round(max(gaps), 3),
    }
    shown = f"{len(arrivals)} events, first after {first * 1000:.0f} ms, spread {spread * 1000:.0f} ms"
    if spread < BURST_SECONDS:
        detail = f"{shown}: all at once, buffered on the way"
        return Result(name, Status.FAIL, detail, Cause.STREAM_MODE, measured)
    return Result(name, Status.PASS, f"{shown}: incremental", measured=measured)


def expect_refusal(name: str, reply: Reply, status: int, kind: str) -> Result:
    got, _, _ = reply.error()
    if reply.status == status and got == kind and isinstance(reply.json(), dict):
        return Result(name, Status.PASS, f"{status} {kind} (JSON)")
    return failure(name, reply, f"{status} {kind}")


# --- the ledger ---------------------------------------------------------------------------------


def ledger_items(client: Any, table: str, principal_id: str, since: datetime) -> list[dict[str, Any]]:
    """The principal's request records from ``since`` on, decoded (the ledger owns the query)."""
    from bedrock_spend.aws.ledger import Ledger

    return Ledger(table, client=client).records(principal_id, since)


def expected_cost(book: PriceBook, item: dict[str, Any]) -> Decimal | None:
    """What the price book says the recorded tokens cost; None when the book cannot tell."""
    from bedrock_spend.aws.ledger import usage_of
    from bedrock_spend.domain.model_ids import InvalidModelIdError, parse_model_id

    if item.get("PriceBookVersion") != book.version:
        return None  # priced by another version of the book: compare nothing
    try:
        ref = parse_model_id(str(item.get("ModelId", "")))
    except InvalidModelIdError:
        return None
    usage = usage_of(item)
    cost = book.price(
        usage,
        ref,
        region=str(item.get("Region", "")),
        service_tier=item.get("ServiceTier"),
        latency=item.get("Latency"),
    )
    return cost.total if cost.priced else None


def check_ledger(
    calls: Sequence[Call],
    read: Callable[[], list[dict[str, Any]]],
    book: PriceBook,
    wait_seconds: float,
    only_run: bool,
) -> tuple[Result, Decimal]:
    """Every billed call of the run recorded exactly once, with tokens and cost; and the total.

    ``only_run``: the principal is the run's own, so any other record is an error too.
    """
    wanted = {call.request_id: call for call in calls}
    deadline = time.monotonic() + wait_seconds
    while True:
        items = read()
        by_id: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            by_id.setdefault(str(item.get("RequestId", "")), []).append(item)
        if all(request_id in by_id for request_id in wanted) or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    problems: list[str] = []
    total = Decimal(0)
    for request_id, call in wanted.items():
        found = by_id.get(request_id, [])
        if not found:
            problems.append(f"{call.check} ({request_id or 'no request id'}) not recorded")
            continue
        if len(found) > 1:
            problems.append(f"{call.check} recorded {len(found)} times")
        item = found[0]
        if int(item.get("InputTokens", 0)) <= 0 or int(item.get("OutputTokens", 0)) <= 0:
            problems.append(f"{call.check} recorded without tokens")
        if not item.get("Priced"):
            problems.append(f"{call.check} recorded unpriced ({item.get('UnpricedReason') or 'no reason'})")
            continue
        cost = Decimal(item.get("CostMicroUsd", 0))
        total += cost
        expected = expected_cost(book, item)
        if cost <= 0:
            problems.append(f"{call.check} recorded at $0")
        elif expected is not None and expected != cost:
            problems.append(f"{call.check} cost {cost} micro-USD, the price book says {expected}")
    if only_run:
        extra = sorted(set(by_id) - set(wanted))
        if extra:
            problems.append(f"{len(extra)} record(s) of calls the check did not make: {', '.join(extra[:3])}")
    if problems:
        return Result("ledger", Status.FAIL, "; ".join(problems), Cause.LEDGER), total
    detail = f"{len(wanted)} billed calls recorded once each, with tokens and cost ({usd(total)})"
    return Result("ledger", Status.PASS, detail, measured={"calls": len(wanted)}), total


# --- the command --------------------------------------------------------------------------------


def api_endpoint(args: argparse.Namespace, tables: Tables) -> str:
    if args.endpoint:
        return str(args.endpoint)
    if os.environ.get(API_ENDPOINT_ENV):
        return os.environ[API_ENDPOINT_ENV]
    found = tables.stack_output(API_ENDPOINT_OUTPUT)
    if found:
        return found
    raise CliError(
        f"no API endpoint: pass --endpoint URL, set {API_ENDPOINT_ENV}, or name a deployed stack with "
        f"--stack ({tables.stack_problem(API_ENDPOINT_OUTPUT)})"
    )


def region_of(aws: Aws) -> str:
    if aws.region:
        return aws.region
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if os.environ.get(name):
            return os.environ[name]
    import boto3

    return boto3.session.Session(profile_name=aws.profile).region_name or "us-east-1"


def confirm(message: str, assume_yes: bool) -> bool:
    print(message, file=sys.stderr)
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError("the check makes billed calls: pass --yes to run it without the prompt")
    print("Continue? [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def check(args: argparse.Namespace, aws: Aws, tables: Tables) -> int:
    from bedrock_spend.domain.keys import hash_key
    from bedrock_spend.domain.model_ids import InvalidModelIdError, family, parse_model_id
    from bedrock_spend.domain.prices import load_price_book

    endpoint = api_endpoint(args, tables)
    book = load_price_book()
    region = region_of(aws)
    model_id = args.model or cheapest_model(aws, book, region)
    try:
        model_family = family(parse_model_id(model_id))
    except InvalidModelIdError as exc:
        raise UsageError(f"--model: {exc}") from exc
    planned = plan(model_family, args.long)
    estimate = estimate_micro_usd(book, model_id, region, planned)
    shown = f"at most {usd(estimate)}" if estimate is not None else "unknown (the model has no price)"
    if not confirm(
        f"bedrock-spend check: {len(planned)} billed calls to {model_id} through {endpoint}; "
        f"cost {shown} (price book {book.version}).",
        args.yes,
    ):
        print("cancelled", file=sys.stderr)
        return 1

    from bedrock_spend.aws.key_store import KeyStore

    ca_bundle = args.ca_bundle or os.environ.get("AWS_CA_BUNDLE") or None
    api = Api(endpoint, ca_bundle, timeout=args.timeout)
    dynamodb = aws.client("dynamodb")
    minting = args.key is None
    store: KeyStore | None
    try:
        store = KeyStore(tables.keys(), client=dynamodb)
    except CliError:
        if minting:
            raise
        store = None

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    run = Run(api, model_id, model_family, store, progress)
    cleanup_errors: list[str] = []
    total = Decimal(0)
    principal: str | None = None
    try:
        if minting:
            main_key = run.mint("calls").key
            principal = run.keys[0].record.principal_id
        else:
            main_key = args.key
            record = store.get_by_hash(hash_key(main_key)) if store is not None else None
            principal = record.principal_id if record is not None else None
        run.routes(main_key)
        run.streams(main_key)
        run.count_tokens(main_key)
        run.openai(main_key)
        if args.long:
            run.long_call(main_key)
        run.refusals(store is not None, args.authorizer_ttl, args.wait_revocation)
        if principal is None:
            run.add(
                Result("ledger", Status.SKIP, "the key's principal is unknown (no key table to look it up)")
            )
        elif run.calls:
            try:
                usage_table = tables.usage()
            except CliError as exc:
                run.add(Result("ledger", Status.FAIL, str(exc), Cause.LEDGER))
            else:
                since = run.started_at - timedelta(seconds=5)
                owner = principal

                def read() -> list[dict[str, Any]]:
                    return ledger_items(dynamodb, usage_table, owner, since)

                result, total = check_ledger(run.calls, read, book, args.ledger_wait, only_run=minting)
                run.add(result)
        else:
            run.add(Result("ledger", Status.SKIP, "no billed call succeeded"))
    finally:
        cleanup_errors = run.cleanup()
        api.close()
    for message in cleanup_errors:
        print(f"warning: {message}", file=sys.stderr)
    passed = not any(r.status is Status.FAIL for r in run.results)
    emit(args.format, run, endpoint, estimate, total, passed, cleanup_errors)
    return 0 if passed else EXIT_FAILED


COLUMNS = [
    Column("CHECK", "check"),
    Column("RESULT", "status"),
    Column("DETAIL", "detail"),
    Column("LOOK AT", "look_at"),
]


def emit(
    fmt: str,
    run: Run,
    endpoint: str,
    estimate: Decimal | None,
    total: Decimal,
    passed: bool,
    cleanup_errors: Sequence[str],
) -> None:
    rows = [result.row() for result in run.results]
    keys = [
        {"key_id": m.record.key_id, "role": m.role, "principal": m.record.principal_id, "revoked": m.revoked}
        for m in run.keys
    ]
    if fmt == "json":
        document = {
            "passed": passed,
            "endpoint": endpoint,
            "model_id": run.model_id,
            "estimate_usd": str(estimate / Decimal(1_000_000)) if estimate is not None else None,
            "cost_micro_usd": str(total),
            "cost_usd": str(total / Decimal(1_000_000)),
            "results": rows,
            "keys": keys,
            "cleanup_errors": list(cleanup_errors),
        }
        print(dumps(document))
        return
    if fmt == "csv":
        emit_rows(rows, COLUMNS, "csv")
        return
    print(render_table(rows, COLUMNS))
    print()
    failed = sum(r.status is Status.FAIL for r in run.results)
    skipped = sum(r.status is Status.SKIP for r in run.results)
    print(f"model {run.model_id} at {endpoint}")
    print(f"cost of the run: {usd(total)} (the ledger's figure)")
    if keys:
        revoked = sum(k["revoked"] for k in keys)
        print(
            f"temporary keys: {len(keys)} minted, {revoked} revoked ({', '.join(k['key_id'] for k in keys)})"
        )
    verdict = "PASS" if passed else "FAIL"
    print(f"{verdict}: {len(rows) - failed - skipped} passed, {failed} failed, {skipped} skipped")


def _ttl(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 3600:
        raise argparse.ArgumentTypeError(f"invalid TTL {text!r}: give 0-3600 seconds")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}")
    return value


def _key(text: str) -> str:
    from bedrock_spend.domain.keys import KEY_PREFIX

    if not text.startswith(KEY_PREFIX):
        raise argparse.ArgumentTypeError(f"not an API key: keys start with {KEY_PREFIX}")
    return text


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    add_command: AddCommand,
) -> None:
    p = add_command(
        commands,
        "check",
        "prove a deployed stack works: every route, streams, refusals, the ledger",
        f"""\
examples:
  bedrock-spend check                                   # the stack named by --stack
  bedrock-spend check --model amazon.nova-micro-v1:0 --yes
  bedrock-spend check --long --format json > check.json # also one call past {OLD_LIMIT_SECONDS:.0f} s

Mints temporary keys (user bedrock-spend-check-<id>, expiring within the hour) and
revokes them at the end, also when the run fails; --key uses your key instead (the
refusal checks still mint their own). Calls each route once with the cheapest text model
the account lists (--model to choose), times the streams' events, checks the refusals
(401, 403 revoked, 403 ModelNotAllowed, 429 BudgetExceeded) and reads the ledger back.
The cost is stated before the first call (a fraction of a cent; --yes skips the prompt).

The endpoint is --endpoint, else {API_ENDPOINT_ENV}, else the stack's {API_ENDPOINT_OUTPUT}
output. AWS_CA_BUNDLE or --ca-bundle name the CA to trust (make run prints it).

Each FAIL names what to look at: IAM / Bedrock model access, STREAM mode / LWA, LWA layer,
SnapStart, authorizer, authorizer TTL, ledger. SKIP is not a failure (a route not
deployed, a model that does not count tokens, a revoked key still in the authorizer cache).
exit status: 0 no check failed, 3 a check failed, 1 the check could not run, 2 usage error.
""",
    )
    p.add_argument("--endpoint", metavar="URL", help=f"API endpoint, stage included (env {API_ENDPOINT_ENV})")
    p.add_argument(
        "--model", metavar="MODEL_ID", help="model to call (default: the cheapest the account lists)"
    )
    p.add_argument("--key", type=_key, metavar="KEY", help="call with this key instead of a temporary one")
    p.add_argument("--ca-bundle", metavar="PATH", help="CA certificates to trust (default: AWS_CA_BUNDLE)")
    p.add_argument(
        "--long", action="store_true", help=f"also run one call longer than {OLD_LIMIT_SECONDS:.0f} s"
    )
    p.add_argument(
        "--authorizer-ttl",
        type=_ttl,
        default=300,
        metavar="SECONDS",
        help="the stack's AuthorizerCacheTtl, for the revocation check (default 300)",
    )
    p.add_argument(
        "--wait-revocation",
        action="store_true",
        help="wait up to the authorizer TTL for a used key's revocation to take effect",
    )
    p.add_argument(
        "--ledger-wait",
        type=_seconds,
        default=20.0,
        metavar="SECONDS",
        help="how long to wait for the ledger's records (default 20)",
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=900.0,
        metavar="SECONDS",
        help="per-call read timeout (default 900)",
    )
    p.add_argument("--yes", action="store_true", help="do not ask before making billed calls")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(handler=check)
