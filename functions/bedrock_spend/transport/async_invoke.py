"""Bedrock Runtime's async API, for the video models (Amazon Nova Reel, Luma Ray), as unmodified
AWS SDKs call it through the proxy.

* ``POST /async-invoke`` (StartAsyncInvoke): ``{modelId, modelInput, outputDataConfig:
  {s3OutputDataConfig: {s3Uri, ...}}, clientRequestToken?, tags?}`` -> ``{invocationArn}``. Metered
  like every call (allow-list on ``modelId``, unpriced policy, budget, in-flight place, all before
  Bedrock is called) and recorded once Bedrock accepted it, for the seconds of video the request
  asks for (:func:`bedrock_spend.domain.usage.usage_from_async_invoke`): the proxy never sees the job
  end, and AWS does not bill a job that fails.
* ``GET /async-invoke/{invocationArn}`` (GetAsyncInvoke): the job's status, passed through, free.
* ``GET /async-invoke`` (ListAsyncInvokes) is refused: it lists every caller's jobs in the account.

Bedrock writes the video to the caller's S3 URI with the proxy's role, so the output bucket must
be one the deployment lists (``AsyncOutputBuckets``; the role may write to those only): any other
is refused with a 400 before Bedrock is called. The body forwarded is the one checked, re-encoded,
so a duplicated member cannot show the proxy one bucket and Bedrock another.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import quote, unquote

from bedrock_spend.domain.errors import BadRequestError, ProxyError
from bedrock_spend.transport import json_body
from bedrock_spend.transport.forwarding import Outbound
from bedrock_spend.transport.meters import Requested
from bedrock_spend.transport.native import BedrockCall

PATH = "/async-invoke"
START_OPERATION = "StartAsyncInvoke"
BUCKETS_PARAMETER = "AsyncOutputBuckets"
# botocore's shapes: InvocationArn and S3Uri (bedrock-runtime service model).
INVOCATION_ARN = re.compile(r"arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:async-invoke/[a-z0-9]{12}")
S3_URI = re.compile(r"s3://([a-z0-9][.\-a-z0-9]{1,61}[a-z0-9])(/.*)?", re.DOTALL)


class ListingRefusedError(ProxyError):
    status = 403
    type = "AccessDeniedException"  # what boto3 raises as client.exceptions.AccessDeniedException


LISTING_REFUSED = (
    "ListAsyncInvokes is not served by this proxy: Bedrock would list the async invocations of "
    "every caller in the AWS account, not only yours. Keep the invocationArn StartAsyncInvoke "
    "returned and call GetAsyncInvoke with it."
)


def parse_start(body: bytes, buckets: Collection[str]) -> BedrockCall:
    """The StartAsyncInvoke call a ``POST /async-invoke`` asks for; 400 for a bucket not allowed."""
    if not buckets:
        raise BadRequestError(
            "this deployment serves no async (video) invocations: its template parameter "
            f"{BUCKETS_PARAMETER} names no S3 output bucket the proxy may write to"
        )
    data = json_body.parse_object(body, f"{START_OPERATION} request body")
    model_id = data.get("modelId")
    if not isinstance(model_id, str) or not model_id:
        raise BadRequestError("modelId is required: the id of the video model to run")
    if not isinstance(data.get("modelInput"), Mapping):
        raise BadRequestError("modelInput is required: the model's request, a JSON object")
    bucket = output_bucket(data.get("outputDataConfig"))
    if bucket not in buckets:
        raise BadRequestError(
            f"output bucket {bucket!r} is not one this proxy may write to ({', '.join(sorted(buckets))}); "
            f"the deployment's {BUCKETS_PARAMETER} parameter lists them"
        )
    forwarded = json_body.dump(data)  # what was checked is what Bedrock reads
    outbound = Outbound("POST", PATH, {"content-type": "application/json"}, forwarded)
    return BedrockCall(START_OPERATION, model_id, outbound, Requested(body=forwarded))


def output_bucket(output_data_config: Any) -> str:
    """The bucket of ``outputDataConfig.s3OutputDataConfig.s3Uri``; 400 when there is none."""
    s3 = output_data_config.get("s3OutputDataConfig") if isinstance(output_data_config, Mapping) else None
    uri = s3.get("s3Uri") if isinstance(s3, Mapping) else None
    if not isinstance(uri, str):
        raise BadRequestError("outputDataConfig.s3OutputDataConfig.s3Uri is required: s3://<bucket>/<prefix>")
    match = S3_URI.fullmatch(uri)
    if match is None:
        raise BadRequestError(f"s3Uri {uri[:80]!r} is not an S3 URI s3://<bucket>[/<prefix>]")
    return match[1]


def status_path(raw_path: str) -> str:
    """The GetAsyncInvoke path to forward, from ``/async-invoke/<invocation ARN>`` (encoded once)."""
    start = raw_path.find(PATH + "/")
    arn = unquote(raw_path[start + len(PATH) + 1 :]) if start >= 0 else ""
    if not INVOCATION_ARN.fullmatch(arn):
        raise BadRequestError(
            f"{arn[:120]!r} is not an async invocation ARN "
            "(arn:aws:bedrock:<region>:<account>:async-invoke/<id>, as StartAsyncInvoke returned it)"
        )
    return f"{PATH}/{quote(arn, safe='-._~')}"
