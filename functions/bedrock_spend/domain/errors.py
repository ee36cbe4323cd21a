"""Domain errors and their one mapping to HTTP.

Every error a caller can see is a :class:`ProxyError`: an HTTP status, a short type name
and a message that never contains secrets or stack traces. Bedrock's own errors are not
ProxyErrors: they are relayed as Bedrock sent them, so SDK clients raise the class they expect.
"""

from __future__ import annotations

from typing import Any


class ProxyError(Exception):
    status: int = 500
    type: str = "InternalServerError"

    def __init__(self, message: str, *, status: int | None = None, type: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type

    def body(self) -> dict[str, Any]:
        # "message" at the top level is what botocore reads for rest-json errors;
        # "error" is this API's documented shape.
        return {"message": self.message, "error": {"type": self.type, "message": self.message}}


class BadRequestError(ProxyError):
    status = 400
    type = "ValidationException"


class NotFoundError(ProxyError):
    status = 404
    type = "NotFound"


class ForbiddenModelError(ProxyError):
    status = 403
    type = "ModelNotAllowed"


class UnpricedModelError(ProxyError):
    status = 400
    type = "UnpricedModel"


class BudgetExceededError(ProxyError):
    status = 429
    type = "BudgetExceeded"

    def __init__(self, message: str, *, budget_usd: str, spent_usd: str, resets_at: str) -> None:
        super().__init__(message)
        self.budget_usd = budget_usd
        self.spent_usd = spent_usd
        self.resets_at = resets_at

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"].update(budgetUsd=self.budget_usd, spentUsd=self.spent_usd, resetsAt=self.resets_at)
        return body


class TooManyInFlightError(ProxyError):
    status = 429
    type = "TooManyCallsInFlight"


class UnauthorizedError(ProxyError):
    status = 401
    type = "Unauthorized"


class BedrockNotReachedError(ProxyError):
    """The request never reached Bedrock (connect failure): not a call, nothing billed."""

    status = 503
    type = "BedrockUnavailable"


class BedrockConnectionLostError(ProxyError):
    """The connection broke after the request was sent: Bedrock may have billed the call."""

    status = 502
    type = "BedrockConnectionLost"


class BedrockTimeoutError(ProxyError):
    """Bedrock sent nothing for longer than the idle timeout, after the request was sent."""

    status = 504
    type = "BedrockTimeout"
