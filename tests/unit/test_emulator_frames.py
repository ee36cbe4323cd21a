"""The emulator's event-stream frames are what botocore (every AWS SDK's parser) reads."""

from __future__ import annotations

import base64
import json

from botocore.eventstream import EventStreamBuffer

from bedrock_spend_local.eventstream import chunk_event, converse_event, error_event, exception_event


def decode(data: bytes) -> list[tuple[dict[str, object], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return [(dict(message.headers), message.payload) for message in buffer]


def test_chunk_converse_exception_and_error_frames_decode_with_botocore() -> None:
    frames = (
        chunk_event({"type": "message_start"})
        + converse_event("metadata", {"usage": {"inputTokens": 3}})
        + exception_event("throttlingException", "slow down")
        + error_event("InternalFailure", "boom")
    )
    (chunk, chunk_body), (meta, meta_body), (exc, exc_body), (err, _) = decode(frames)
    assert (chunk[":message-type"], chunk[":event-type"]) == ("event", "chunk")
    assert json.loads(base64.b64decode(json.loads(chunk_body)["bytes"])) == {"type": "message_start"}
    assert (meta[":event-type"], json.loads(meta_body)["usage"]) == ("metadata", {"inputTokens": 3})
    assert (exc[":message-type"], exc[":exception-type"]) == ("exception", "throttlingException")
    assert json.loads(exc_body)["message"] == "slow down"
    assert (err[":message-type"], err[":error-code"], err[":error-message"]) == (
        "error",
        "InternalFailure",
        "boom",
    )
