"""API Gateway TOKEN authorizer: hash the key, read its record, allow or deny.

Denials: a missing, malformed or unknown key raises "Unauthorized" (API Gateway: 401);
a revoked or expired key gets an explicit Deny policy (403). The token is never logged.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerResponse,
    APIGatewayAuthorizerTokenEvent,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from bedrock_spend import metrics
from bedrock_spend.authorizer.service import authorize

logger = Logger()


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    token_event = APIGatewayAuthorizerTokenEvent(event)
    decision = authorize(token_event.authorization_token)
    if not decision.allow:
        logger.info("request denied", extra={"reason": decision.reason, "principal": decision.principal_id})
        metrics.emit_denial(decision.reason)
    if decision.reason.unauthenticated:
        raise Exception("Unauthorized")
    arn = token_event.parsed_arn
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
