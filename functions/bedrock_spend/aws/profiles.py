"""Application inference profiles resolved to the base model they run, for pricing.

An application inference profile ARN says nothing about its model. The resolver asks, in
order: a static mapping (ARN -> base model id or system profile id, from configuration),
then the Bedrock control plane (``GetInferenceProfile`` -> ``models[].modelArn``), caching
answers for ``ttl_seconds``. It never raises: a profile it cannot resolve comes back
unchanged and is then priced as unpriced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from bedrock_spend.domain.model_ids import InvalidModelIdError, ModelRef, parse_model_id

logger = logging.getLogger(__name__)

# A failed lookup is retried sooner than a success is refreshed, so a throttle or a
# permissions fix does not leave the profile unpriced for a whole TTL.
FAILURE_TTL_SECONDS = 60.0
# Region families of the geographic system profiles, most specific first.
_GEO_BY_REGIONS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("us-gov", lambda r: r.startswith("us-gov-")),
    ("us", lambda r: r.startswith("us-") or r.startswith("ca-")),
    ("eu", lambda r: r.startswith("eu-")),
    ("jp", lambda r: r in ("ap-northeast-1", "ap-northeast-3")),
    ("au", lambda r: r in ("ap-southeast-2", "ap-southeast-4")),
    ("apac", lambda r: r.startswith("ap-")),
)

Resolution = tuple[str, str]  # (base model id, scope)


def _default_client_factory() -> Any:
    from bedrock_spend import aws

    return aws.client("bedrock")


class ProfileResolver:
    """Fills ``base_model``, ``provider`` and ``scope`` of application-inference-profile refs."""

    def __init__(
        self,
        static: Mapping[str, str] | None = None,
        client_factory: Callable[[], Any] | None = None,
        ttl_seconds: float = 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._static = dict(static or {})
        self._client_factory = client_factory or _default_client_factory
        self._client: Any = None
        self._ttl = ttl_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, Resolution | None]] = {}

    def resolve(self, ref: ModelRef) -> ModelRef:
        """``ref`` with its base model filled in, or ``ref`` unchanged when that is not possible."""
        if ref.kind != "application-inference-profile" or ref.base_model is not None:
            return ref
        resolution = self._resolution(ref.raw)
        if resolution is None:
            return ref
        base, scope = resolution
        return replace(ref, base_model=base, provider=base.partition(".")[0], scope=scope)

    def _resolution(self, arn: str) -> Resolution | None:
        if arn in self._static:
            return _from_model_id(self._static[arn])
        now = self._clock()
        cached = self._cache.get(arn)
        if cached is not None and now < cached[0]:
            return cached[1]
        resolution = self._ask_bedrock(arn)
        ttl = self._ttl if resolution is not None else min(self._ttl, FAILURE_TTL_SECONDS)
        self._cache[arn] = (now + ttl, resolution)
        return resolution

    def _ask_bedrock(self, arn: str) -> Resolution | None:
        # Any failure (ClientError, no credentials, endpoint down, odd response) only means
        # "unresolved": the call itself has been or will be served either way.
        try:
            if self._client is None:
                self._client = self._client_factory()
            response = self._client.get_inference_profile(inferenceProfileIdentifier=arn)
            model_arns = [m["modelArn"] for m in response.get("models", [])]
            resolution = _from_model_arns(model_arns)
        except Exception:
            logger.warning("cannot resolve application inference profile %s", arn[:200], exc_info=True)
            return None
        if resolution is None:
            logger.warning("application inference profile %s has no single base model", arn[:200])
        return resolution


def _from_model_id(value: str) -> Resolution | None:
    """A base model id, a system profile id (``us.x``), or a foundation-model / profile ARN."""
    try:
        ref = parse_model_id(value)
    except InvalidModelIdError:
        return None
    return (ref.base_model, ref.scope) if ref.base_model else None


def _from_model_arns(model_arns: Iterable[str]) -> Resolution | None:
    bases: set[str] = set()
    regions: set[str] = set()
    for arn in model_arns:
        parts = arn.split(":", 5)
        if len(parts) != 6 or parts[2] != "bedrock":
            return None
        kind, _, model_id = parts[5].partition("/")
        if kind != "foundation-model" or "." not in model_id:
            return None
        bases.add(model_id)
        regions.add(parts[3])
    if len(bases) != 1:
        return None
    return bases.pop(), _scope_of(regions)


def _scope_of(regions: set[str]) -> str:
    """One Region: a copy of the model itself; several: a copy of a system profile.

    The geo is the Region family they all share; Regions from several families (or none) can
    only come from a ``global.`` profile. Anything unclear stays in-Region.
    """
    if len(regions) <= 1:
        return "in-region" if regions != {""} else "global"
    for geo, member in _GEO_BY_REGIONS:
        if all(member(r) for r in regions):
            return geo
    if all(regions):
        families = {r.split("-")[0] for r in regions}
        if len(families) > 1:
            return "global"
    return "in-region"
