"""API Gateway Lambda authorizer: hash the key, read its record, allow or deny.

Two event kinds reach it. TOKEN events (every route but the Anthropic Messages API) carry the
``Authorization`` header and are cached by API Gateway per token. REQUEST events come from the
``/mantle/anthropic/...`` routes, whose callers send the key either as ``Authorization: Bearer``
(the Anthropic SDK's Bedrock Mantle client) or as ``x-api-key`` (the Anthropic SDK's own
client); ``Authorization`` wins when both are sent. A REQUEST authorizer is cached only by
identity sources that are all present, and a caller sends one header or the other, so those
routes are authorized on every call (see docs/cost.md).

Denials: a missing, malformed or unknown key raises "Unauthorized" (API Gateway: 401);
a revoked or expired key gets an explicit Deny policy (403). The key is never logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerResponse,
    APIGatewayRouteArn,
    parse_api_gateway_arn,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from bedrock_spend.authorizer.service import authorize
from bedrock_spend.aws import metrics

logger = Logger()

# Header names as API Gateway passes them in a REQUEST event: as the caller spelled them.
_KEY_HEADERS = ("authorization", "x-api-key")


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    decision = authorize(presented_key(event))
    if not decision.allow:
        logger.info("request denied", extra={"reason": decision.reason, "principal": decision.principal_id})
        metrics.emit_denial(decision.reason)
    if decision.reason.unauthenticated:
        raise Exception("Unauthorized")
    arn: APIGatewayRouteArn = parse_api_gateway_arn(str(event.get("methodArn") or ""))
    policy = APIGatewayAuthorizerResponse(
        principal_id=decision.principal_id,
        region=arn.region,
        aws_account_id=arn.aws_account_id,
        api_id=arn.api_id,
        stage=arn.stage,
        context=decision.context,
        partition=arn.partition,
    )
    # The cached policy is reused for every method of the API, so it must cover them all.
    if decision.allow:
        policy.allow_all_routes()
    else:
        policy.deny_all_routes()
    return policy.asdict()


def presented_key(event: Mapping[str, Any]) -> str | None:
    """The header value holding the key: the TOKEN event's token, or a REQUEST event's header."""
    if event.get("type") != "REQUEST":
        token = event.get("authorizationToken")
        return token if isinstance(token, str) else None
    headers = event.get("headers")
    if not isinstance(headers, Mapping):
        return None
    by_name = {str(name).lower(): value for name, value in headers.items()}
    for name in _KEY_HEADERS:
        value = by_name.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None
