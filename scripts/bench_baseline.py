"""The reference design's proxy handler, rebuilt as `make bench`'s baseline. Not shipped.

Built the way the blog post's seed builds it, so the benchmark compares like with like:
boto3 and Powertools' event handler imported, the Bedrock Runtime, CloudWatch and DynamoDB
clients created at import time, a hard-coded price table for its two Claude models, and a
synchronous ``PutMetricData`` of its four metrics on every request. Only the endpoints
differ from the original: boto3 reads them from ``AWS_ENDPOINT_URL_*``, as our functions do.
"""

from __future__ import annotations

import json
import os
from typing import Any

import boto3
from aws_lambda_powertools.event_handler import APIGatewayRestResolver

app = APIGatewayRestResolver()
bedrock = boto3.client("bedrock-runtime")
cloudwatch = boto3.client("cloudwatch")
dynamodb = boto3.client("dynamodb")  # the seed's key table client, created here like the others

NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "BedrockCostApportionment")
# USD per 1,000 tokens (input, output), us-east-1: the seed knows these two models only.
PRICES_PER_1K = {
    "anthropic.claude-3-haiku-20240307-v1:0": (0.00025, 0.00125),
    "anthropic.claude-3-sonnet-20240229-v1:0": (0.003, 0.015),
}


@app.post("/invoke-model")
def invoke_model() -> dict[str, Any]:
    request = app.current_event.json_body
    model_id = request["modelId"]
    response = bedrock.invoke_model(
        modelId=model_id,
        body=json.dumps(request["body"]),
        contentType="application/json",
        accept="application/json",
    )
    answer: dict[str, Any] = json.loads(response["body"].read())
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    input_tokens = int(headers["x-amzn-bedrock-input-token-count"])
    output_tokens = int(headers["x-amzn-bedrock-output-token-count"])
    input_price, output_price = PRICES_PER_1K[model_id]  # KeyError for any other model
    principal = app.current_event.raw_event["requestContext"]["authorizer"]["principalId"]
    dimensions = [{"Name": "PrincipalId", "Value": principal}, {"Name": "ModelId", "Value": model_id}]
    cloudwatch.put_metric_data(
        Namespace=NAMESPACE,
        MetricData=[
            {
                "MetricName": "InputTokensUsed",
                "Dimensions": dimensions,
                "Value": input_tokens,
                "Unit": "Count",
            },
            {
                "MetricName": "InputTokensCost",
                "Dimensions": dimensions,
                "Value": input_tokens / 1000 * input_price,
                "Unit": "None",
            },
            {
                "MetricName": "OutputTokensUsed",
                "Dimensions": dimensions,
                "Value": output_tokens,
                "Unit": "Count",
            },
            {
                "MetricName": "OutputTokensCost",
                "Dimensions": dimensions,
                "Value": output_tokens / 1000 * output_price,
                "Unit": "None",
            },
        ],
    )
    return answer


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
