"""The deployed API as template.yaml declares it: stage, routes, authorizer, gateway
responses and the functions' handlers and environment.

Everything the local stack serves is read from here, so a route or variable added to the
template reaches `make run` without a second edit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bedrock_spend_local.tables import TEMPLATE, load_template

ACCOUNT_ID = "123456789012"
# Lambda's defaults when a function sets neither its own value nor a Globals one.
DEFAULT_TIMEOUT_SECONDS = 3
DEFAULT_MEMORY_MB = 128


class TemplateError(ValueError):
    """template.yaml has something the local stack cannot serve."""


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    logical_id: str
    handler: str
    timeout: float
    memory_mb: int
    environment: Mapping[str, str]

    @property
    def short_name(self) -> str:
        """``ProxyFunction`` -> ``proxy`` (log files, console prefixes)."""
        name = self.logical_id.removesuffix("Function") or self.logical_id
        return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


@dataclass(frozen=True, slots=True)
class Route:
    method: str  # upper case, or "ANY"
    path: str  # the template's resource path, e.g. /model/{modelId}/invoke
    function: str  # logical id of the function it invokes
    authorized: bool = True
    # The event's own Auth.Authorizer; None = the API's DefaultAuthorizer.
    authorizer: str | None = None
    # Seconds API Gateway waits for the integration's response to start (TimeoutInMillis).
    timeout: float = 29.0

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.strip("/").split("/")) if self.path.strip("/") else ()

    def match(self, method: str, raw_path: str) -> dict[str, str] | None:
        """Path parameters (still percent-encoded) if this route serves the request, else None."""
        if self.method not in ("ANY", method):
            return None
        parts = raw_path.strip("/").split("/") if raw_path.strip("/") else []
        if raw_path != "/" + "/".join(parts):
            return None  # empty segments (//) or a trailing slash are different resources
        params: dict[str, str] = {}
        for index, segment in enumerate(self.segments):
            greedy = re.fullmatch(r"\{(\w+)\+\}", segment)
            if greedy:
                rest = parts[index:]
                if not rest:
                    return None
                params[greedy.group(1)] = "/".join(rest)
                return params
            if index >= len(parts):
                return None
            variable = re.fullmatch(r"\{(\w+)\}", segment)
            if variable:
                params[variable.group(1)] = parts[index]
            elif segment != parts[index]:
                return None
        return params if len(parts) == len(self.segments) else None

    @property
    def specificity(self) -> tuple[int, int]:
        """API Gateway prefers literal segments over variables, and variables over greedy ones."""
        literal = sum(1 for s in self.segments if not s.startswith("{"))
        greedy = sum(1 for s in self.segments if s.endswith("+}"))
        return literal, -greedy


@dataclass(frozen=True, slots=True)
class GatewayResponse:
    status: int | None
    headers: Mapping[str, str]  # name -> mapping expression, e.g. "'Unauthorized'"
    templates: Mapping[str, str]  # content type -> body template


@dataclass(frozen=True, slots=True)
class AuthorizerSpec:
    name: str
    function: str
    payload_type: str  # TOKEN or REQUEST
    # TOKEN: its one header. REQUEST: Identity.Headers, all required when present; none (only
    # allowed with caching off) means every request reaches the function.
    identity_headers: tuple[str, ...]
    ttl_seconds: int


@dataclass(frozen=True, slots=True)
class ApiDefinition:
    logical_id: str
    stage: str
    routes: tuple[Route, ...]
    functions: Mapping[str, FunctionSpec]
    authorizer: AuthorizerSpec | None  # the DefaultAuthorizer
    gateway_responses: Mapping[str, GatewayResponse] = field(default_factory=dict)
    parameters: Mapping[str, str] = field(default_factory=dict)
    authorizers: Mapping[str, AuthorizerSpec] = field(default_factory=dict)  # all, by name

    def authorizer_for(self, route: Route) -> AuthorizerSpec | None:
        if not route.authorized:
            return None
        return self.authorizers[route.authorizer] if route.authorizer else self.authorizer

    def route_for(self, method: str, raw_path: str) -> tuple[Route, dict[str, str]] | None:
        matches = [
            (route, params) for route in self.routes if (params := route.match(method, raw_path)) is not None
        ]
        if not matches:
            return None
        return max(matches, key=lambda item: item[0].specificity)


def parameter_defaults(template: Mapping[str, Any]) -> dict[str, str]:
    return {
        name: str(spec["Default"])
        for name, spec in (template.get("Parameters") or {}).items()
        if isinstance(spec, Mapping) and "Default" in spec
    }


class _Resolver:
    """Resolves the intrinsic functions the template's values use (Ref, Sub)."""

    def __init__(self, parameters: Mapping[str, str], names: Mapping[str, str], region: str) -> None:
        self.values = {
            **parameters,
            **names,
            "AWS::Region": region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": "bedrock-spend-local",
        }

    def resolve(self, value: Any) -> str | None:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, Mapping) and len(value) == 1:
            [(function, argument)] = value.items()
            if function == "Ref" and isinstance(argument, str):
                return self.values.get(argument)
            if function == "Sub" and isinstance(argument, str):
                missing = [
                    name for name in re.findall(r"\$\{([^}!]+)\}", argument) if name not in self.values
                ]
                if missing:
                    return None
                return re.sub(r"\$\{([^}!]+)\}", lambda m: self.values[m.group(1)], argument)
        return None


def load_api(
    *,
    table_names: Mapping[str, str],
    region: str,
    overrides: Mapping[str, str] | None = None,
    path: Path = TEMPLATE,
) -> ApiDefinition:
    """The template's one REST API with its routes and functions.

    ``table_names`` maps DynamoDB logical ids to the local table names (what ``!Ref`` gives);
    ``overrides`` replaces parameter defaults, like ``sam deploy --parameter-overrides``.
    """
    template = load_template(path)
    parameters = {**parameter_defaults(template), **(overrides or {})}
    resolver = _Resolver(parameters, table_names, region)
    resources: Mapping[str, Any] = template.get("Resources") or {}
    apis = [name for name, res in resources.items() if res.get("Type") == "AWS::Serverless::Api"]
    if len(apis) != 1:
        raise TemplateError(f"expected one AWS::Serverless::Api in the template, found {len(apis)}")
    api_id = apis[0]
    api_props: Mapping[str, Any] = resources[api_id].get("Properties") or {}
    stage = resolver.resolve(api_props.get("StageName"))
    if not stage:
        raise TemplateError(f"{api_id} has no StageName")

    globals_function: Mapping[str, Any] = (template.get("Globals") or {}).get("Function") or {}
    functions: dict[str, FunctionSpec] = {}
    routes: list[Route] = []
    for name, resource in resources.items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props: Mapping[str, Any] = resource.get("Properties") or {}
        functions[name] = _function_spec(name, props, globals_function, resolver)
        routes += _routes(name, props, api_id)

    auth: Mapping[str, Any] = api_props.get("Auth") or {}
    authorizers = {
        name: _authorizer(name, spec or {}, resolver)
        for name, spec in (auth.get("Authorizers") or {}).items()
    }
    for spec in authorizers.values():
        if spec.function not in functions:
            raise TemplateError(f"authorizer {spec.name} names an unknown function {spec.function}")
    default = auth.get("DefaultAuthorizer")
    if default and default != "NONE" and default not in authorizers:
        raise TemplateError(f"DefaultAuthorizer {default} is not in Auth.Authorizers")
    authorizer = authorizers[default] if default and default != "NONE" else None
    for route in routes:
        if route.authorizer is not None and route.authorizer not in authorizers:
            raise TemplateError(f"route {route.path} names an unknown authorizer {route.authorizer}")
    if authorizer is None:
        routes = [
            Route(r.method, r.path, r.function, authorized=r.authorizer is not None, authorizer=r.authorizer)
            for r in routes
        ]
    return ApiDefinition(
        logical_id=api_id,
        stage=stage,
        routes=tuple(routes),
        functions=functions,
        authorizer=authorizer,
        gateway_responses=_gateway_responses(api_props.get("GatewayResponses") or {}),
        parameters=parameters,
        authorizers=authorizers,
    )


def _function_spec(
    name: str, props: Mapping[str, Any], globals_function: Mapping[str, Any], resolver: _Resolver
) -> FunctionSpec:
    handler = props.get("Handler") or globals_function.get("Handler")
    if not isinstance(handler, str) or "." not in handler:
        raise TemplateError(f"{name} has no Handler of the form module.function")
    variables: dict[str, str] = {}
    for source in (globals_function, props):
        for key, value in ((source.get("Environment") or {}).get("Variables") or {}).items():
            resolved = resolver.resolve(value)
            if resolved is not None:
                variables[key] = resolved
    timeout = props.get("Timeout", globals_function.get("Timeout", DEFAULT_TIMEOUT_SECONDS))
    memory = props.get("MemorySize", globals_function.get("MemorySize", DEFAULT_MEMORY_MB))
    return FunctionSpec(
        logical_id=name,
        handler=handler,
        timeout=float(resolver.resolve(timeout) or DEFAULT_TIMEOUT_SECONDS),
        memory_mb=int(resolver.resolve(memory) or DEFAULT_MEMORY_MB),
        environment=variables,
    )


def _routes(function: str, props: Mapping[str, Any], api_id: str) -> list[Route]:
    routes = []
    for event in (props.get("Events") or {}).values():
        if event.get("Type") != "Api":
            continue
        event_props: Mapping[str, Any] = event.get("Properties") or {}
        api_ref = event_props.get("RestApiId")
        if api_ref is not None and api_ref != {"Ref": api_id}:
            continue
        auth = event_props.get("Auth") or {}
        named = auth.get("Authorizer")
        routes.append(
            Route(
                method=str(event_props["Method"]).upper(),
                path="/" + str(event_props["Path"]).strip("/"),
                function=function,
                authorized=named != "NONE",
                authorizer=str(named) if named and named != "NONE" else None,
                timeout=int(event_props.get("TimeoutInMillis") or 29_000) / 1000,
            )
        )
    return routes


def _authorizer(name: str, spec: Mapping[str, Any], resolver: _Resolver) -> AuthorizerSpec:
    arn = spec.get("FunctionArn")
    function = arn.get("GetAtt", "").split(".")[0] if isinstance(arn, Mapping) else None
    if not function:
        raise TemplateError(f"authorizer {name} has no FunctionArn: !GetAtt <Function>.Arn")
    payload_type = str(spec.get("FunctionPayloadType") or "TOKEN").upper()
    identity: Mapping[str, Any] = spec.get("Identity") or {}
    ttl_value = resolver.resolve(identity.get("ReauthorizeEvery", 300))
    ttl = int(ttl_value) if ttl_value is not None else 300
    if payload_type == "TOKEN":
        headers: tuple[str, ...] = (str(identity.get("Header") or "Authorization"),)
    elif payload_type == "REQUEST":
        if any(identity.get(kind) for kind in ("QueryStrings", "StageVariables", "Context")):
            raise TemplateError(f"authorizer {name}: only header identity sources are emulated")
        headers = tuple(str(h) for h in identity.get("Headers") or ())
        if not headers and ttl > 0:
            raise TemplateError(f"authorizer {name}: a cached REQUEST authorizer needs identity sources")
    else:
        raise TemplateError(f"authorizer {name}: {payload_type} authorizers are not emulated")
    return AuthorizerSpec(
        name=name,
        function=function,
        payload_type=payload_type,
        identity_headers=headers,
        ttl_seconds=ttl,
    )


def _gateway_responses(raw: Mapping[str, Any]) -> dict[str, GatewayResponse]:
    responses = {}
    for kind, spec in raw.items():
        spec = spec or {}
        status = spec.get("StatusCode")
        responses[str(kind)] = GatewayResponse(
            status=int(status) if status is not None else None,
            headers=dict((spec.get("ResponseParameters") or {}).get("Headers") or {}),
            templates=dict(spec.get("ResponseTemplates") or {}),
        )
    return responses
