"""Where the CLI's AWS calls go: session, endpoint, and which tables to use.

boto3 is imported on the first client, never at import time, so ``--help`` and argument
errors stay fast and work without AWS configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

DEFAULT_STACK = "bedrock-spend"
KEYS_TABLE_ENV = "BEDROCK_SPEND_KEYS_TABLE"
USAGE_TABLE_ENV = "BEDROCK_SPEND_USAGE_TABLE"
KEYS_TABLE_OUTPUT = "ApiKeyTableName"
USAGE_TABLE_OUTPUT = "UsageTableName"


class CliError(Exception):
    """An operational failure: printed as ``error: <message>``, exit status 1."""


class UsageError(Exception):
    """Arguments that parse but do not make sense together: exit status 2."""


@dataclass
class Aws:
    """One boto3 session for the whole command; clients share ``--endpoint-url``."""

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    _session: Any = field(default=None, repr=False)
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            import boto3
            from botocore.config import Config

            if self._session is None:
                # As the AWS CLI: --region, then AWS_REGION, then AWS_DEFAULT_REGION and the profile
                # (boto3 itself reads only the last two).
                region = self.region or os.environ.get("AWS_REGION") or None
                self._session = boto3.session.Session(profile_name=self.profile, region_name=region)
            self._clients[service] = self._session.client(
                service,
                endpoint_url=self.endpoint_url,
                config=Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5),
            )
        return self._clients[service]


def stack_outputs(aws: Aws, stack: str) -> dict[str, str]:
    """OutputKey -> OutputValue of a CloudFormation stack (one DescribeStacks call)."""
    response = aws.client("cloudformation").describe_stacks(StackName=stack)
    stacks = response.get("Stacks") or []
    if not stacks:
        return {}
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs") or [] if "OutputKey" in o}


@dataclass
class Tables:
    """Table names, each from its flag, then its env var, then the stack's outputs."""

    aws: Aws
    stack: str = DEFAULT_STACK
    keys_flag: str | None = None
    usage_flag: str | None = None
    _outputs: dict[str, str] | None = field(default=None, repr=False)
    _stack_error: str | None = field(default=None, repr=False)

    def keys(self) -> str:
        return self._resolve(self.keys_flag, KEYS_TABLE_ENV, KEYS_TABLE_OUTPUT, "--keys-table", "API key")

    def usage(self) -> str:
        return self._resolve(self.usage_flag, USAGE_TABLE_ENV, USAGE_TABLE_OUTPUT, "--usage-table", "usage")

    def stack_output(self, name: str) -> str | None:
        """One output of the stack (e.g. ApiEndpoint), or None when it cannot be read."""
        return self._stack_outputs().get(name) or None

    def stack_problem(self, name: str) -> str:
        """Why :meth:`stack_output` found nothing, for an error message."""
        return self._stack_error or f"stack {self.stack!r} has no output {name}"

    def _resolve(self, flag: str | None, env: str, output: str, option: str, what: str) -> str:
        if flag:
            return flag
        if os.environ.get(env):
            return os.environ[env]
        outputs = self._stack_outputs()
        if outputs.get(output):
            return outputs[output]
        reason = self._stack_error or f"stack {self.stack!r} has no output {output}"
        raise CliError(
            f"no {what} table: pass {option} NAME, set {env}, or name a deployed stack with --stack "
            f"({reason})"
        )

    def _stack_outputs(self) -> dict[str, str]:
        if self._outputs is None:
            try:
                self._outputs = stack_outputs(self.aws, self.stack)
            except Exception as exc:
                message = aws_error_message(exc)
                if message is None:
                    raise
                self._outputs, self._stack_error = {}, f"stack lookup failed: {message}"
        return self._outputs


def aws_error_message(exc: BaseException, endpoint_url: str | None = None) -> str | None:
    """A one-line, readable message for an AWS SDK error; None for anything else."""
    import sys

    if "botocore" not in sys.modules:
        return None
    from botocore import exceptions as bce

    if isinstance(exc, bce.NoCredentialsError):
        return (
            "no AWS credentials found: configure them (aws configure / aws sso login), "
            "pass --profile, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(exc, bce.ProfileNotFound):
        return f"AWS profile not found: {exc.kwargs.get('profile')!r}"
    if isinstance(exc, bce.NoRegionError):
        return "no AWS region: pass --region or set AWS_REGION"
    if isinstance(exc, bce.EndpointConnectionError | bce.ConnectTimeoutError):
        return f"could not connect to {exc.kwargs.get('endpoint_url') or endpoint_url or 'AWS'}"
    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        code, text = error.get("Code", "Error"), error.get("Message", "")
        operation = exc.operation_name
        hint = _HINTS.get(code, "")
        return f"{operation} failed: {code}: {text}{hint}".rstrip(": ")
    if isinstance(exc, bce.BotoCoreError):
        return str(exc)
    return None


_HINTS = {
    "ResourceNotFoundException": " (check the table name, --region and --endpoint-url)",
    "AccessDeniedException": " (the credentials in use lack this permission)",
    "ExpiredTokenException": " (refresh your credentials, e.g. aws sso login)",
    "UnrecognizedClientException": " (the credentials are not valid for this account or endpoint)",
}
