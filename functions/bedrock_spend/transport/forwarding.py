"""Bedrock adapter: sign a request with SigV4 and open it, streaming; failures as domain errors.

The proxy forwards the caller's request as Bedrock's own HTTP API defines it and relays the
answer's bytes as they arrive, so nothing here knows an operation's shape. botocore supplies
the credential chain and the signer (the same code every AWS SDK call goes through); httpx
carries the bytes.

Failures are told apart by whether Bedrock may have billed: a connection that could not be
opened, or a request that could not be written, never reached Bedrock
(:class:`BedrockNotReachedError`); a connection that breaks or stalls after the request was
sent is a call Bedrock may bill (:class:`BedrockConnectionLostError`,
:class:`BedrockTimeoutError`), which the caller of this module must record.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from bedrock_spend.domain.errors import (
    BedrockConnectionLostError,
    BedrockNotReachedError,
    BedrockTimeoutError,
    ProxyError,
)

SIGNING_NAME = "bedrock"
# The bedrock-mantle endpoint (Responses, Chat Completions, Anthropic Messages) signs as its own
# service (AWS user guide "Making inference requests"; the Anthropic SDK's Mantle client).
MANTLE_SIGNING_NAME = "bedrock-mantle"
# Sent so Bedrock never compresses: the proxy relays Bedrock's bytes as they are.
IDENTITY = "identity"


@dataclass(frozen=True, slots=True)
class Outbound:
    """One request for Bedrock: ``path`` percent-encoded as botocore encodes it."""

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


class Upstream:
    """Bedrock's answer, open: status and headers now, the body as it arrives."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: dict[str, str] = {k.lower(): v for k, v in response.headers.items()}

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive (no decoding); domain errors when the connection fails."""
        try:
            async for data in self._response.aiter_raw():
                yield data
        except httpx.TimeoutException as exc:
            raise BedrockTimeoutError("Bedrock stopped sending before the answer ended") from exc
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise BedrockConnectionLostError(
                "the connection to Bedrock broke before the answer ended"
            ) from exc

    async def close(self) -> None:
        await self._response.aclose()


class Forwarder:
    """Signs and sends requests to one Bedrock endpoint, over one pooled HTTP client."""

    def __init__(
        self,
        endpoint: str,
        region: str,
        *,
        credentials: Any = None,
        connect_timeout: float = 2.0,
        idle_timeout: float = 300.0,
        client: httpx.AsyncClient | None = None,
        signing_name: str = SIGNING_NAME,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.region = region
        self.signing_name = signing_name
        self._credentials = credentials
        self._client = client
        self._timeout = httpx.Timeout(idle_timeout, connect=connect_timeout, pool=connect_timeout)

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            # Certificates from the environment (AWS_CA_BUNDLE is botocore's, honoured too).
            self._client = httpx.AsyncClient(timeout=self._timeout, verify=_verify(), trust_env=False)
        return self._client

    def credentials(self) -> Any:
        if self._credentials is None:
            import botocore.session

            self._credentials = botocore.session.get_session().get_credentials()
        if self._credentials is None:
            raise ProxyError("the proxy has no AWS credentials to sign Bedrock calls with")
        return self._credentials

    def signed_headers(self, outbound: Outbound) -> dict[str, str]:
        """The headers to send: the outbound ones plus host, SigV4 date and signature."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        headers = {**outbound.headers, "accept-encoding": IDENTITY}
        request = AWSRequest(
            method=outbound.method, url=self.endpoint + outbound.path, data=outbound.body, headers=headers
        )
        # Refreshable credentials (a role's) are frozen per request, so a refresh never lands
        # between reading the key and the token.
        frozen = self.credentials().get_frozen_credentials()
        SigV4Auth(frozen, self.signing_name, self.region).add_auth(request)
        return dict(request.headers.items())

    async def open(self, outbound: Outbound) -> Upstream:
        request = self.client.build_request(
            outbound.method,
            self.endpoint + outbound.path,
            headers=self.signed_headers(outbound),
            content=outbound.body,
        )
        try:
            response = await self.client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise BedrockNotReachedError("Bedrock could not be reached") from exc
        except (httpx.WriteError, httpx.WriteTimeout) as exc:
            # Bedrock cannot act on a request it did not receive whole.
            raise BedrockNotReachedError("the request could not be sent to Bedrock") from exc
        except httpx.TimeoutException as exc:
            raise BedrockTimeoutError("Bedrock did not start answering in time") from exc
        except httpx.TransportError as exc:
            raise BedrockConnectionLostError("the connection to Bedrock broke before it answered") from exc
        except Exception as exc:
            # Whatever failed, the request may have reached Bedrock: treat it as a possibly
            # billed call, so it is recorded rather than lost behind a generic error.
            raise BedrockConnectionLostError("sending the request to Bedrock failed") from exc
        return Upstream(response)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def _verify() -> Any:
    bundle = os.environ.get("AWS_CA_BUNDLE")
    return ssl.create_default_context(cafile=bundle) if bundle else True
