"""`make run`: the whole proxy on localhost, with no AWS account and no Docker.

:class:`LocalStack` starts, in this process: a moto server (DynamoDB tables created from
template.yaml, and CloudWatch), the Bedrock Runtime emulator (or real Bedrock, or any
endpoint), the proxy's ASGI app behind an API Gateway emulation (stage, the real authorizer,
the Lambda Web Adapter's request mapping) served by uvicorn on https://127.0.0.1:3000/<stage>
with a certificate from a CA made at start (trustme), and the EMF-to-CloudWatch forwarder.
All state is in memory.
``bedrock-spend-local`` (:func:`main`) runs it with a banner; the end-to-end tests use it too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, ClassVar, Literal, TextIO, cast
from urllib.parse import urlsplit

from bedrock_spend_local.api import ApiDefinition, FunctionSpec, TemplateError, load_api
from bedrock_spend_local.emf import MetricsForwarder, is_emf
from bedrock_spend_local.gateway import ApiGateway, AsgiApp
from bedrock_spend_local.moto_fixes import faster_moto
from bedrock_spend_local.runtime import LambdaFunction, StdoutCapture, _environ
from bedrock_spend_local.tables import create_tables, load_template, table_definitions

logger = logging.getLogger(__name__)

STACK_NAME = "bedrock-spend-local"
DEMO_USERNAME = "demo"
DEMO_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
DEFAULT_PORT = 3000
DEFAULT_REGION = "us-east-1"
# moto and the emulator accept any credentials; these make boto3 sign without a lookup.
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
BedrockMode = Literal["emulator", "aws", "endpoint"]


class StartupError(RuntimeError):
    """The stack cannot start; the message is one line for the console."""


class PortInUseError(StartupError):
    def __init__(self, host: str, port: int, option: str) -> None:
        super().__init__(f"port {port} on {host} is in use (try {option} {port + 1})")
        self.host, self.port, self.option = host, port, option


@dataclass(frozen=True, slots=True)
class LocalConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    aws_port: int = 0  # moto (DynamoDB + CloudWatch); 0 = a free port
    emulator_port: int = 0
    stage: str | None = None  # None = the template's StageName default
    authorizer_ttl: int | None = None  # None = the template's AuthorizerCacheTtl default
    bedrock: BedrockMode = "emulator"
    bedrock_endpoint: str | None = None
    # bedrock-mantle (OpenAI- and Anthropic-compatible APIs); None: the Bedrock endpoint above.
    mantle_endpoint: str | None = None
    region: str | None = None
    log_dir: Path | None = Path(".local")
    log_format: Literal["short", "json"] = "short"
    integration_timeout: float | None = None  # None: each route's TimeoutInMillis
    # Template parameters, as `sam deploy --parameter-overrides Key=Value` gives them.
    parameter_overrides: dict[str, str] = field(default_factory=dict)
    echo_logs: bool = True  # show the functions' output on the console
    access_log: bool = True
    # What the gateway calls; None = the proxy's app (bedrock_spend.proxy.app.create_app).
    app_factory: Callable[[], AsgiApp] | None = None


class LocalStack:
    """The local stack in this process: ``start()``/``stop()`` or a ``with`` block.

    Only one runs at a time per process: the functions read their configuration from
    ``os.environ`` (as in Lambda), which ``start`` sets and ``stop`` restores.
    """

    _running: ClassVar[LocalStack | None] = None

    def __init__(self, config: LocalConfig | None = None, **overrides: Any) -> None:
        self.config = replace(config or LocalConfig(), **overrides)
        self.region = ""
        self.api: ApiDefinition | None = None
        self.tables: dict[str, str] = {}
        self.moto_url = ""
        self.emulator_url: str | None = None
        self.bedrock_endpoint: str | None = None
        self.demo_key = ""
        self.demo_key_id = ""
        self.gateway: ApiGateway | None = None
        self.metrics: MetricsForwarder | None = None
        self.log_files: dict[str, Path] = {}
        self.ca_file: Path | None = None  # the CA that signed the server's certificate (PEM)
        self.loop: asyncio.AbstractEventLoop | None = None  # the server's, once it runs
        self._server: Any = None  # uvicorn.Server
        self._server_thread: threading.Thread | None = None
        self._port = 0
        self._tls_dir: Path | None = None
        self._moto_fix = contextlib.ExitStack()
        self._moto: Any = None
        self._emulator: Any = None
        self._saved_env: dict[str, str | None] = {}
        self._capture: StdoutCapture | None = None
        self._log_handles: dict[str, TextIO] = {}
        self._log_lock = threading.Lock()

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> LocalStack:
        if LocalStack._running is not None:
            raise StartupError("another local stack is already running in this process")
        LocalStack._running = self
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        config = self.config
        self.region = config.region or _configured_region(config.bedrock)
        self.tables = {logical_id: f"{STACK_NAME}-{logical_id}" for logical_id in table_definitions()}
        overrides = dict(config.parameter_overrides)
        if config.stage is not None:
            overrides["StageName"] = config.stage
        if config.authorizer_ttl is not None:
            overrides["AuthorizerCacheTtl"] = str(config.authorizer_ttl)
        try:
            self.api = load_api(table_names=self.tables, region=self.region, overrides=overrides)
        except TemplateError as exc:
            raise StartupError(f"template.yaml: {exc}") from exc
        self._capture = StdoutCapture.instance()
        if self.api.authorizer is None:
            raise StartupError("template.yaml: the API has no authorizer")
        if {spec.function for spec in self.api.authorizers.values()} != {self.api.authorizer.function}:
            raise StartupError("template.yaml: every authorizer must use the same function")
        authorizer = LambdaFunction(
            self.api.functions[self.api.authorizer.function], self.region, self._capture
        )
        proxy = self.api.functions[self.api.routes[0].function]
        # Bind the public port first, so a taken one fails before anything else starts.
        listener = self._bind()
        self._moto_fix.enter_context(faster_moto())
        self._start_moto()
        if config.bedrock == "emulator":
            self._start_emulator()
        elif config.bedrock == "endpoint":
            self.bedrock_endpoint = config.bedrock_endpoint
        self._set_environment()
        _reset_function_caches()
        create_tables(self._aws_client("dynamodb"), self.tables)
        self._open_logs()
        self.metrics = MetricsForwarder(lambda: self._aws_client("cloudwatch"))
        self.metrics.start()
        self._capture.add_sink(self._on_line)
        self._capture.install()
        # The app runs on uvicorn's event loop and thread pool: its lines are the proxy's.
        self._capture.default = proxy.short_name
        authorizer.load()  # import errors surface now, not on the first request
        app = config.app_factory() if config.app_factory else _proxy_app(proxy)
        self.gateway = ApiGateway(
            self.api,
            app,
            authorizer.invoke,
            region=self.region,
            integration_timeout=config.integration_timeout,
            remove_base_path=proxy.environment.get("AWS_LWA_REMOVE_BASE_PATH")
            or proxy.environment.get("REMOVE_BASE_PATH"),
            function_name=f"{STACK_NAME}-{proxy.logical_id}",
            function_timeout=proxy.timeout,
            function_memory_mb=proxy.memory_mb,
            access_log=self._access_log if config.access_log else None,
        )
        self._mint_demo_key()
        self._serve(listener)

    def stop(self) -> None:
        """Stop everything that started, restore the environment. Safe to call twice."""
        steps = (
            self._stop_server,
            self._stop_metrics,
            self._stop_capture,
            self._close_logs,
            self._stop_emulator,
            self._stop_moto,
            self._stop_moto_fix,
            self._restore_environment,
        )
        for step in steps:
            try:
                step()
            except Exception:
                logger.exception("stopping the local stack: %s failed", step.__name__)
        if LocalStack._running is self:
            LocalStack._running = None

    def __enter__(self) -> LocalStack:
        return self.start()

    @classmethod
    def running(cls) -> LocalStack:
        """The stack running in this process."""
        if cls._running is None:
            raise RuntimeError("no local stack is running")
        return cls._running

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every metric printed so far is in CloudWatch (moto)."""
        return self.metrics.flush(timeout) if self.metrics is not None else True

    # --- addresses ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the local stack is not running")
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"https://{host}:{self._port}"

    @property
    def url(self) -> str:
        """The API endpoint, stage included (what ApiEndpoint is in the deployed stack)."""
        assert self.api is not None
        return f"{self.base_url}/{self.api.stage}"

    @property
    def stage(self) -> str:
        assert self.api is not None
        return self.api.stage

    def cli_args(self) -> list[str]:
        """The global options that point the ``bedrock-spend`` CLI at this stack."""
        return [
            "--endpoint-url",
            self.moto_url,
            "--region",
            self.region,
            "--keys-table",
            self.tables["ApiKeyTable"],
            "--usage-table",
            self.tables["UsageTable"],
        ]

    # --- parts ----------------------------------------------------------------------------------

    def _bind(self) -> socket.socket:
        config = self.config
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        # proto=IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on connections
        # of sockets that say they are TCP. Without it a stream's first event, written right
        # after the headers, waited ~40 ms for the client's delayed ACK.
        listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((config.host, config.port))
        except OSError as exc:
            listener.close()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(config.host, config.port, "--port") from exc
            raise StartupError(
                f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}"
            ) from exc
        self._port = listener.getsockname()[1]
        return listener

    def _serve(self, listener: socket.socket) -> None:
        """uvicorn over HTTPS, in a thread with its own event loop, on the bound socket."""
        import trustme
        import uvicorn

        self._tls_dir = Path(tempfile.mkdtemp(prefix="bedrock-spend-local-"))
        ca = trustme.CA(organization_name="bedrock-spend-local")
        leaf = ca.issue_cert("127.0.0.1", "localhost", "::1")
        key_file, cert_file = self._tls_dir / "server.key", self._tls_dir / "server.pem"
        leaf.private_key_pem.write_to_path(str(key_file))
        leaf.cert_chain_pems[0].write_to_path(str(cert_file))
        ca_dir = self.config.log_dir or self._tls_dir
        self.ca_file = (ca_dir / "ca.pem").resolve()
        ca.cert_pem.write_to_path(str(self.ca_file))
        gateway, capture = self.gateway, self._capture
        assert gateway is not None and capture is not None

        async def serve(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                self.loop = asyncio.get_running_loop()
            capture.install()  # again: something (pytest's capture, say) may have replaced sys.stdout
            await gateway(scope, receive, send)

        server = uvicorn.Server(
            uvicorn.Config(
                serve,
                ssl_keyfile=str(key_file),
                ssl_certfile=str(cert_file),
                log_config=None,
                log_level="warning",
                access_log=False,
                lifespan="auto",
                timeout_graceful_shutdown=2,
                # h11 refuses request heads over 16 KB by dropping the connection, which a client
                # still sending its body may see as a reset: let the gateway judge large heads.
                h11_max_incomplete_event_size=1024 * 1024,
            )
        )
        self._server = server
        self._server_thread = threading.Thread(
            target=server.run, kwargs={"sockets": [listener]}, name="uvicorn", daemon=True
        )
        self._server_thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not self._server_thread.is_alive() or time.monotonic() > deadline:
                raise StartupError("the HTTPS server did not start (see the log above)")
            time.sleep(0.02)

    def _start_moto(self) -> None:
        from moto.server import ThreadedMotoServer

        host, port = "127.0.0.1", self.config.aws_port
        werkzeug = logging.getLogger("werkzeug")
        if werkzeug.level == logging.NOTSET:
            werkzeug.setLevel(logging.WARNING)  # one access-log line per moto call is noise here
        if port and not _port_free(host, port):
            # ThreadedMotoServer binds in its thread and would wait forever on a taken port.
            raise PortInUseError(host, port, "--aws-port")
        self._moto = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
        self._moto.start()
        moto_host, moto_port = self._moto.get_host_and_port()
        self.moto_url = f"http://{moto_host}:{moto_port}"
        # moto keeps its state per process, not per server: start from nothing, as `make run` does.
        reset = urllib.request.Request(f"{self.moto_url}/moto-api/reset", method="POST")  # noqa: S310
        with urllib.request.urlopen(reset, timeout=10) as response:  # noqa: S310 - our own http URL
            response.read()

    def _start_emulator(self) -> None:
        from bedrock_spend_local.emulator import BedrockEmulator

        emulator = BedrockEmulator(host="127.0.0.1", port=self.config.emulator_port)
        try:
            self.emulator_url = emulator.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError("127.0.0.1", self.config.emulator_port, "--emulator-port") from exc
            raise
        self._emulator = emulator
        self.bedrock_endpoint = self.emulator_url

    def _set_environment(self) -> None:
        assert self.api is not None
        env: dict[str, str | None] = {
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL_DYNAMODB": self.moto_url,
            "AWS_ENDPOINT_URL_CLOUDWATCH": self.moto_url,
            # Real Bedrock means no endpoint override at all, not even an inherited one.
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": self.bedrock_endpoint,
            # The emulator serves bedrock-mantle's paths too; real Mantle has its own host.
            "AWS_ENDPOINT_URL_BEDROCK_MANTLE": self.config.mantle_endpoint or self.bedrock_endpoint,
            # The control plane (inference profiles) is moto's with the emulator, real otherwise.
            "AWS_ENDPOINT_URL_BEDROCK": self.moto_url if self.config.bedrock == "emulator" else None,
        }
        for spec in self.api.functions.values():
            for variable, text in spec.environment.items():
                if variable != "POWERTOOLS_SERVICE_NAME":  # set per function when it is imported
                    env[variable] = text
        if self.config.bedrock == "emulator" or (
            self.config.bedrock == "endpoint" and not _have_credentials()
        ):
            # Nothing here checks credentials; fixed ones avoid slow or failing lookups
            # (IMDS probes, expired SSO sessions). Real Bedrock keeps the default chain.
            env.update(DUMMY_CREDENTIALS)
            env["AWS_SESSION_TOKEN"] = None
        elif self.config.bedrock == "aws" and not _have_credentials():
            raise StartupError(
                "--bedrock aws needs AWS credentials from the default chain (aws configure, AWS_PROFILE, ...)"
            )
        for name, value in env.items():
            if name not in self._saved_env:
                self._saved_env[name] = os.environ.get(name)
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def _restore_environment(self) -> None:
        saved, self._saved_env = self._saved_env, {}
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _reset_function_caches()

    def _aws_client(self, service: str) -> Any:
        """A client of this stack's moto server (for the stack itself, not the functions)."""
        import boto3

        return boto3.session.Session().client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.moto_url,
            region_name=self.region,
            aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def _mint_demo_key(self) -> None:
        from bedrock_spend.aws.key_store import KeyStore
        from bedrock_spend.domain.keys import KeyRecord, hash_key, mint_key, new_key_id, utcnow

        key = mint_key()
        record = KeyRecord(
            key_hash=hash_key(key),
            key_id=new_key_id(),
            username=DEMO_USERNAME,
            created_at=utcnow(),
            team="local",
            description="demo key minted by bedrock-spend-local",
        )
        KeyStore(self.tables["ApiKeyTable"], client=self._aws_client("dynamodb")).create(record)
        self.demo_key, self.demo_key_id = key, record.key_id

    def _open_logs(self) -> None:
        assert self.api is not None
        if self.config.log_dir is None:
            return
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        for spec in self.api.functions.values():
            path = self.config.log_dir / f"{spec.short_name}.log"
            self.log_files[spec.short_name] = path
            self._log_handles[spec.short_name] = path.open("a", encoding="utf-8")

    def _close_logs(self) -> None:
        with self._log_lock:
            handles, self._log_handles = self._log_handles, {}
        for handle in handles.values():
            handle.close()

    def _stop_server(self) -> None:
        server, thread, self._server, self._server_thread = self._server, self._server_thread, None, None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=10)
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir = None

    def _stop_moto_fix(self) -> None:
        self._moto_fix.close()

    def _stop_metrics(self) -> None:
        if self.metrics is not None:
            self.metrics.stop()

    def _stop_capture(self) -> None:
        if self._capture is not None:
            self._capture.default = None
            self._capture.remove_sink(self._on_line)
            self._capture.uninstall()

    def _stop_emulator(self) -> None:
        emulator, self._emulator = self._emulator, None
        if emulator is not None:
            emulator.stop()

    def _stop_moto(self) -> None:
        moto, self._moto = self._moto, None
        if moto is not None:
            moto.stop()

    # --- the functions' output ------------------------------------------------------------------

    def _on_line(self, function: str, line: str) -> None:
        """One line a function printed: metrics to CloudWatch, the line to its log and the console."""
        emf = self.metrics.submit(line) if self.metrics is not None else False
        with self._log_lock:
            handle = self._log_handles.get(function)
            if handle is not None:
                handle.write(line + "\n")
                handle.flush()
        if self.config.echo_logs and self._capture is not None:
            shown = line if self.config.log_format == "json" else short_line(function, line, emf)
            if shown is not None:
                self._capture.write_through(shown + "\n")

    def _access_log(self, entry: str) -> None:
        if self._capture is not None and self.config.echo_logs:
            self._capture.write_through(f"{_clock()} {'gateway':<10} {entry}\n")

    # --- what the banner shows ------------------------------------------------------------------

    def curl_command(self) -> str:
        body = {
            "modelId": DEMO_MODEL,
            "body": {
                "anthropic_version": "bedrock-2023-05-31",
                "max_tokens": 200,
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "Say hello in three languages."}]}
                ],
            },
        }
        return " ".join(
            [
                "curl -sS --cacert",
                shlex.quote(str(self.ca_file)),
                shlex.quote(f"{self.url}/invoke-model"),
                "-H",
                shlex.quote(f"Authorization: Bearer {self.demo_key}"),
                "-H",
                shlex.quote("Content-Type: application/json"),
                "-d",
                shlex.quote(json.dumps(body, separators=(",", ":"))),
            ]
        )

    def boto3_snippet(self) -> list[str]:
        """What a boto3 user sets: the endpoint, the key as a bearer token, and the CA."""
        return [
            f"export AWS_BEARER_TOKEN_BEDROCK={shlex.quote(self.demo_key)} "
            f"AWS_CA_BUNDLE={shlex.quote(str(self.ca_file))}",
            'python -c \'import boto3; print(boto3.client("bedrock-runtime", '
            f'region_name="{self.region}", endpoint_url="{self.url}").converse('
            f'modelId="{DEMO_MODEL}", messages=[{{"role": "user", '
            '"content": [{"text": "Say hello."}]}])["output"])\'',
        ]

    def cli_command(self, *arguments: str) -> str:
        credentials = " ".join(f"{k}={v}" for k, v in DUMMY_CREDENTIALS.items())
        words = [_cli_path(), *self.cli_args(), *arguments]
        return f"{credentials} {' '.join(shlex.quote(w) for w in words)}"

    def metrics_command(self) -> str:
        credentials = " ".join(f"{k}={v}" for k, v in DUMMY_CREDENTIALS.items())
        namespace = (
            self.api.parameters.get("MetricsNamespace") if self.api else None
        ) or "BedrockCostApportionment"
        return (
            f"{credentials} aws --endpoint-url {self.moto_url} --region {self.region} "
            f"cloudwatch list-metrics --namespace {namespace}"
        )

    def banner(self) -> str:
        assert self.api is not None and self.gateway is not None
        routes = ", ".join(f"{r.method} /{self.stage}{r.path}" for r in self.api.routes)
        bedrock = {
            "emulator": f"emulator at {self.emulator_url}",
            "aws": f"Amazon Bedrock in {self.region} (default credential chain; real calls are billed)",
            "endpoint": f"{self.bedrock_endpoint}",
        }[self.config.bedrock]
        ttl = self.gateway.authorizer_ttl
        logs = ", ".join(_shown_path(p) for p in self.log_files.values())
        logs = f"{logs} (appended across runs)" if logs else "not written (--log-dir none)"
        proxy_log = _shown_path(self.log_files["proxy"]) if "proxy" in self.log_files else "<proxy log>"
        lines = [
            "bedrock-spend local stack: all state (keys, usage, metrics) is in memory and lost on exit.",
            "",
        ]
        if self.config.host not in ("127.0.0.1", "localhost", "::1"):
            lines += [f"  warning: listening on {self.config.host}: other machines can use the demo key", ""]
        lines += [
            f"  API endpoint    {self.url}",
            f"  TLS             AWS_CA_BUNDLE={self.ca_file}  (a new CA each start)",
            f"  routes          {routes}",
            f"  Bedrock         {bedrock}",
            f"  DynamoDB, CloudWatch  moto at {self.moto_url} (region {self.region})",
            f"  tables          {', '.join(self.tables.values())}",
            f"  authorizer      cache {ttl} s" + (" (off)" if ttl == 0 else ""),
            f"  function logs   {logs}",
            "",
            f'Demo key for user "{DEMO_USERNAME}" (principal User::{DEMO_USERNAME}), shown once:',
            f"  {self.demo_key}",
            "",
            "Call a model:",
            f"  {self.curl_command()}",
            "",
            "With boto3 (any AWS SDK: endpoint URL, the key as AWS_BEARER_TOKEN_BEDROCK, the CA bundle):",
            *(f"  {line}" for line in self.boto3_snippet()),
            "",
            "Recorded usage (tokens and cost per principal):",
            f"  {self.cli_command('usage')}",
            "",
            "Metrics (CloudWatch in moto; boto3 works too with endpoint_url):",
            f"  {self.metrics_command()}",
            "",
            "Replay the proxy's log lines into the ledger:",
            f"  {self.cli_command('ledger', 'replay', proxy_log)}",
            "",
            "Ctrl-C to stop.",
        ]
        return "\n".join(lines)


# --- helpers --------------------------------------------------------------------------------------


def _proxy_app(spec: FunctionSpec) -> AsgiApp:
    """The proxy's ASGI app, one per stack (it reads its settings on its first request)."""
    # Powertools loggers read their service name when the module is imported.
    with _environ(POWERTOOLS_SERVICE_NAME=spec.environment.get("POWERTOOLS_SERVICE_NAME")):
        from bedrock_spend.proxy.app import create_app

    return cast(AsgiApp, create_app())


def _configured_region(mode: BedrockMode) -> str:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if os.environ.get(name):
            return os.environ[name]
    if mode != "emulator":
        import boto3

        region = boto3.session.Session().region_name
        if region:
            return str(region)
    return DEFAULT_REGION


def _have_credentials() -> bool:
    import boto3

    return boto3.session.Session().get_credentials() is not None


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _reset_function_caches() -> None:
    """Forget the settings and clients the functions cache per process (functools.cache).

    A Lambda environment reads them once; here the environment changes when a stack starts
    or stops, so every cached function of the ``bedrock_spend`` package starts over.
    """
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "bedrock_spend" or name.startswith("bedrock_spend.")):
            continue
        for value in list(vars(module).values()):
            if getattr(value, "__module__", None) == name and callable(getattr(value, "cache_clear", None)):
                value.cache_clear()


def _cli_path() -> str:
    script = Path(sys.executable).parent / "bedrock-spend"
    if not script.exists():
        return "bedrock-spend"
    return _shown_path(script)


def _shown_path(path: Path) -> str:
    """A path relative to the working directory when it is under it (shorter to paste)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _clock() -> str:
    return time.strftime("%H:%M:%S")


# Powertools log keys that are the same on every line; the short console form leaves them out.
_BORING_KEYS = frozenset(
    {
        "level",
        "message",
        "timestamp",
        "service",
        "location",
        "cold_start",
        "function_name",
        "function_memory_size",
        "function_arn",
        "function_request_id",
        "xray_trace_id",
        "sampling_rate",
        "exception_name",
        "stack_trace",
    }
)


def short_line(function: str, line: str, emf: bool) -> str | None:
    """One console line for a line a function printed (``--log-format short``)."""
    prefix = f"{_clock()} {function:<10}"
    try:
        record = json.loads(line) if line.lstrip().startswith("{") else None
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return f"{prefix} {line}" if line.strip() else None
    if emf or is_emf(record):
        directives = record["_aws"]["CloudWatchMetrics"]
        names = [m.get("Name") for d in directives for m in d.get("Metrics", []) if isinstance(m, dict)]
        dimensions = {n for d in directives for s in d.get("Dimensions", []) for n in s}
        where = " ".join(f"{n}={record.get(n)}" for n in sorted(dimensions))
        values = " ".join(f"{n}={_number(record.get(n))}" for n in names if n)
        return f"{prefix} metrics {where} {values}".rstrip()
    if "errorMessage" in record:
        return f"{prefix} ERROR   {record.get('errorType')}: {record.get('errorMessage')}"
    level = str(record.get("level") or "INFO")
    message = str(record.get("message") or "")
    usage = record.get("usage_record")
    if isinstance(usage, dict):
        tokens = usage.get("usage") or {}
        cost = usage.get("cost") or {}
        details = (
            f"{usage.get('principalId')} {usage.get('modelId')} in={tokens.get('inputTokens')} "
            f"out={tokens.get('outputTokens')} cost_micro_usd={cost.get('totalMicroUsd')}"
        )
        return f"{prefix} {level:<7} {message} {details}"
    extras = " ".join(f"{k}={v}" for k, v in record.items() if k not in _BORING_KEYS)
    text = f"{prefix} {level:<7} {message} {extras}".rstrip()
    if record.get("exception"):
        text += "\n" + str(record["exception"])
    return text


def _number(value: Any) -> str:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


# --- command line ---------------------------------------------------------------------------------


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535)")
    return value


def _ttl(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError("must be 0-3600 seconds (API Gateway's range; 0 = no cache)")
    return value


def _parameter(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    known = load_template().get("Parameters") or {}
    if not sep or name not in known:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give Key=Value with a parameter of template.yaml ({', '.join(sorted(known))})"
        )
    allowed = known[name].get("AllowedValues")
    if allowed and value not in [str(v) for v in allowed]:
        raise argparse.ArgumentTypeError(f"{name} must be one of {', '.join(str(v) for v in allowed)}")
    return name, value


def _timeout(text: str) -> float:
    value = float(text)
    if not 0 < value <= 300:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 300 seconds")
    return value


def _url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http(s) URL")
    return text.rstrip("/")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bedrock-spend-local",
        description="Run the proxy on localhost over HTTPS: API Gateway + authorizer + the proxy app, "
        "DynamoDB and CloudWatch (moto), and a Bedrock Runtime emulator. No AWS account, no Docker. "
        "State is in memory.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, help="API port (default 3000; 0 = free)")
    parser.add_argument("--stage", help="stage name, the first path segment (default: template's StageName)")
    parser.add_argument(
        "--authorizer-ttl", type=_ttl, help="authorizer cache seconds, 0 = off (default: template's value)"
    )
    parser.add_argument(
        "--bedrock",
        choices=("emulator", "aws"),
        help="emulator (default): the local emulator; aws: real Bedrock (default credentials and region)",
    )
    parser.add_argument(
        "--bedrock-endpoint", type=_url, metavar="URL", help="any Bedrock Runtime compatible endpoint"
    )
    parser.add_argument(
        "--mantle-endpoint",
        type=_url,
        metavar="URL",
        help="bedrock-mantle compatible endpoint (default: the Bedrock endpoint, the emulator's included)",
    )
    parser.add_argument("--region", help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION or us-east-1)")
    parser.add_argument("--aws-port", type=_port, default=0, help="moto server port (default: a free port)")
    parser.add_argument(
        "--emulator-port", type=_port, default=0, help="Bedrock emulator port (default: a free port)"
    )
    parser.add_argument(
        "--log-dir",
        default=".local",
        help="where the functions' logs are appended ('none' = nowhere; default .local)",
    )
    parser.add_argument(
        "--log-format", choices=("short", "json"), default="short", help="console form of log lines"
    )
    parser.add_argument(
        "--integration-timeout",
        type=_timeout,
        default=None,
        help="seconds API Gateway waits for the proxy's response to start "
        "(default: each route's TimeoutInMillis in template.yaml)",
    )
    parser.add_argument(
        "--parameter-overrides",
        nargs="+",
        default=[],
        type=_parameter,
        metavar="Key=Value",
        help="template parameters, as for sam deploy (e.g. UnpricedModelPolicy=deny MaxInFlightPerKey=8)",
    )
    args = parser.parse_args(argv)
    if args.bedrock_endpoint and args.bedrock:
        parser.error("--bedrock-endpoint cannot be combined with --bedrock")
    if args.stage is not None and not re.fullmatch(r"[A-Za-z0-9_]{1,64}", args.stage):
        parser.error("--stage must be 1-64 letters, digits or underscores (the template's AllowedPattern)")
    return args


def config_from_args(args: argparse.Namespace) -> LocalConfig:
    mode: BedrockMode = "endpoint" if args.bedrock_endpoint else (args.bedrock or "emulator")
    return LocalConfig(
        host=args.host,
        port=args.port,
        aws_port=args.aws_port,
        emulator_port=args.emulator_port,
        stage=args.stage,
        authorizer_ttl=args.authorizer_ttl,
        bedrock=mode,
        bedrock_endpoint=args.bedrock_endpoint,
        mantle_endpoint=args.mantle_endpoint,
        region=args.region,
        log_dir=None if args.log_dir.lower() == "none" else Path(args.log_dir),
        log_format=args.log_format,
        integration_timeout=args.integration_timeout,
        parameter_overrides=dict(args.parameter_overrides),
    )


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)  # a bad option exits with status 2 (argparse)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    package_logger = logging.getLogger("bedrock_spend_local")
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    stack = LocalStack(config_from_args(args))
    stop = threading.Event()
    with _stop_on_signals(stop):
        try:
            stack.start()
        except StartupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except Exception as exc:  # noqa: BLE001 - the CLI's contract is a one-line error, not a traceback
            print(f"error: could not start the local stack: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        try:
            print(stack.banner(), flush=True)
            while not stop.wait(0.5):
                pass
            print("\nstopping ...", flush=True)
        finally:
            stack.stop()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
