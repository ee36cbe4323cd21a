"""The Lambda runtime's part of the local stack: stdout as CloudWatch Logs, and the authorizer.

The proxy is an ASGI app that the gateway calls directly (as the Lambda Web Adapter does);
the authorizer is a plain handler, run here like the runtime runs it: imported by its
``Handler`` string, called with a JSON copy of the event and a context object, one
invocation at a time, within its timeout. Everything a function prints goes through
:class:`StdoutCapture`, as stdout goes to CloudWatch Logs in Lambda.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import io
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from bedrock_spend_local.api import ACCOUNT_ID, FunctionSpec
from bedrock_spend_local.gateway import FunctionError

Handler = Callable[[dict[str, Any], Any], Any]
LineSink = Callable[[str, str], None]  # (function short name, one printed line)


class StdoutCapture(io.TextIOBase):
    """``sys.stdout`` as a Lambda function sees it.

    Lines printed while a function runs (its EMF metrics and JSON logs) go to the sinks,
    like the runtime ships stdout to CloudWatch Logs. The authorizer runs in worker threads
    marked with :meth:`function`; the proxy app runs on the server's event loop and its
    thread pool, so a line from any other thread but the main one is the ``default``
    function's (the proxy) while one is set; the rest passes through. Lines are assembled
    per thread, so concurrent requests never interleave half lines. One instance per
    process, because loggers keep a reference to the stream they were created with.
    """

    _instance: StdoutCapture | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        super().__init__()
        self._target: TextIO = sys.stdout
        self._local = threading.local()
        self._sinks: list[LineSink] = []
        self._lock = threading.Lock()
        self.default: str | None = None

    @classmethod
    def instance(cls) -> StdoutCapture:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    @property
    def target(self) -> TextIO:
        return self._target

    def install(self) -> None:
        """Become sys.stdout again if something (pytest's capture, say) replaced us."""
        with self._lock:
            if sys.stdout is not self:
                self._target = sys.stdout
                sys.stdout = self

    def uninstall(self) -> None:
        with self._lock:
            if sys.stdout is self:
                sys.stdout = self._target

    def add_sink(self, sink: LineSink) -> None:
        with self._lock:
            self._sinks.append(sink)

    def remove_sink(self, sink: LineSink) -> None:
        with self._lock:
            if sink in self._sinks:
                self._sinks.remove(sink)

    @contextlib.contextmanager
    def function(self, name: str) -> Iterator[None]:
        """Attribute this thread's output to ``name`` while the block runs."""
        self._local.function = name
        self._local.pending = ""
        try:
            yield
        finally:
            pending, self._local.pending = self._local.pending, ""
            if pending:
                self._emit(name, pending)
            self._local.function = None

    def write(self, text: str) -> int:
        function = getattr(self._local, "function", None)
        if function is None and threading.current_thread() is not threading.main_thread():
            function = self.default  # the server's threads run the proxy app; main is the console
        if function is None:
            self.write_through(text)
            return len(text)
        buffered = getattr(self._local, "pending", "") + text
        *lines, self._local.pending = buffered.split("\n")
        for line in lines:
            self._emit(function, line)
        return len(text)

    def _emit(self, function: str, line: str) -> None:
        with self._lock:
            sinks = list(self._sinks)
        if not sinks:
            self.write_through(line + "\n")
        for sink in sinks:
            try:
                sink(function, line)
            except Exception:  # a broken sink must not fail the function that printed
                logging.getLogger(__name__).exception("log sink failed")

    def write_through(self, text: str) -> None:
        """Write to the real stdout (the console), whatever it is now."""
        current = sys.stdout if sys.stdout is not self else self._target
        for stream in (current, sys.__stdout__):
            if stream is None:
                continue
            try:
                stream.write(text)
                stream.flush()
                return
            except (ValueError, OSError):
                continue  # closed (e.g. a finished test's capture): fall back

    def flush(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._target.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        try:
            return self._target.isatty()
        except (ValueError, OSError):
            return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target, "encoding", None) or "utf-8"


class LambdaContext:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    def __init__(self, spec: FunctionSpec, region: str, deadline: float) -> None:
        self.function_name = f"bedrock-spend-local-{spec.logical_id}"
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{self.function_name}"
        self.memory_limit_in_mb = spec.memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex
        self.identity = None
        self.client_context = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class LambdaFunction:
    """A plain-handler function (the authorizer): loaded on first use, one invocation at a time.

    Lambda gives each concurrent request its own execution environment; here there is one,
    so concurrent calls wait their turn. That keeps module-level state in the handler
    (Powertools' logger) as single-threaded as it is in Lambda.
    """

    def __init__(self, spec: FunctionSpec, region: str, capture: StdoutCapture) -> None:
        self.spec = spec
        self.region = region
        self.capture = capture
        self._handler: Handler | None = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.spec.short_name

    def load(self) -> Handler:
        """Import the handler the way the runtime does: ``module.function`` from the Handler string."""
        with self._load_lock:
            if self._handler is None:
                module_name, _, attribute = self.spec.handler.rpartition(".")
                service = self.spec.environment.get("POWERTOOLS_SERVICE_NAME")
                # Powertools loggers read their service name when the module is imported.
                with _environ(POWERTOOLS_SERVICE_NAME=service):
                    module = importlib.import_module(module_name)
                handler = getattr(module, attribute, None)
                if not callable(handler):
                    raise FunctionError("Runtime.HandlerNotFound", f"{self.spec.handler} is not callable")
                self._handler = handler
            return self._handler

    async def invoke(self, event: dict[str, Any]) -> Any:
        """The handler's JSON result; FunctionError if it raised, TimeoutError past its timeout."""
        payload = json.dumps(event, separators=(",", ":"))
        return await asyncio.wait_for(asyncio.to_thread(self._run, payload), self.spec.timeout)

    def _run(self, payload: str) -> Any:
        handler = self.load()
        with self._run_lock, self.capture.function(self.name):
            context = LambdaContext(self.spec, self.region, time.monotonic() + self.spec.timeout)
            try:
                result = handler(json.loads(payload), context)
            except Exception as exc:
                # Lambda prints the error object to the function's log, then returns it.
                print(json.dumps({"errorMessage": str(exc), "errorType": type(exc).__name__}), flush=True)
                raise FunctionError(type(exc).__name__, str(exc)) from exc
        try:
            return json.loads(json.dumps(result))
        except (TypeError, ValueError) as exc:
            raise FunctionError("Runtime.MarshalError", f"Unable to marshal response: {exc}") from exc


@contextlib.contextmanager
def _environ(**values: str | None) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is not None:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
