"""`make bench`: what the proxy adds for a caller, measured next to the reference design.

The proxy runs as it does in Lambda (``functions/run.sh``: uvicorn, one worker) in a process of
its own, in front of the Bedrock emulator and a moto server (DynamoDB, CloudWatch) that run in
this process; a short load script here is the caller. When the local stack (`make run`) starts,
it is measured too, as a third target in front of the same emulator. Measured:

* relay delay per event: a stream of events a fixed gap apart, read (a) straight from the
  emulator and (b) through the proxy, calls interleaved; (b) - (a) per event;
* time to first event added by the proxy (same targets, interleaved);
* the proxy process's CPU per call (InvokeModel, a streamed call) and the reference design's
  handler's (scripts/bench_baseline.py), each in a process of its own;
* cold start, a fresh interpreter to the first answer, for both designs in the same run, and
  import time per package from ``-X importtime``;
* peak RSS of both processes.

Both designs run on functions/requirements.txt installed on its own, as in their Lambda
package, not on the dev venv (:func:`lambda_package`).

pyperf holds the values and does the statistics; the results are saved as a pyperf suite
(.local/bench.json: ``python -m pyperf stats|compare_to`` read it) and written to
docs/benchmarks.md below its hand-written introduction.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psutil
import pyperf

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / ".local" / "bench.json"
PACKAGE = ROOT / ".local" / "bench-package"
REQUIREMENTS = ROOT / "functions" / "requirements.txt"
GENERATED_MARKER = "<!-- Everything below this line is written by `make bench`. -->"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
REGION = "us-east-1"
TABLES = {"ApiKeyTable": "bench-ApiKeyTable", "UsageTable": "bench-UsageTable"}
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
STREAM_PATH = f"/model/{quote(HAIKU, safe='')}/invoke-with-response-stream"
RELAY_TARGET_MS = 5.0
# The functions' interpreter: no site-packages (-S), so they import only what the Lambda package
# holds (PYTHONPATH), not the dev venv's extras.
PYTHON = [sys.executable, "-S"]
# The proxy exactly as functions/run.sh starts it, on a port of our choosing.
UVICORN = ["-m", "uvicorn", "bedrock_spend.proxy.app:app", "--host", "127.0.0.1", "--workers", "1"]
UVICORN_QUIET = ["--no-access-log", "--log-level", "warning"]


@dataclass(frozen=True)
class Plan:
    relay_calls: int = 8  # streamed calls per target, 16 events `gap_ms` apart
    gap_ms: int = 100
    ttfb_calls: int = 30
    cpu_runs: int = 5  # the CPU figures' median and spread are over runs of `cpu_calls` calls
    cpu_calls: int = 40
    cold_runs: int = 7


QUICK = Plan(relay_calls=2, ttfb_calls=8, cpu_runs=2, cpu_calls=10, cold_runs=2)


# --- services: moto and the emulator, in this process ------------------------------------------


@dataclass(frozen=True)
class Services:
    moto_url: str
    emulator_url: str

    def environment(self, package: Path) -> dict[str, str]:
        """What the proxy sees: the template's variables, endpoints on loopback, dummy keys,
        and ``package`` (with the first-party code) as its only libraries."""
        from bedrock_spend_local.api import load_api

        api = load_api(table_names=TABLES, region=REGION)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "PYTHON"))}
        env.update(api.functions["ProxyFunction"].environment)
        env.update(
            CREDENTIALS,
            AWS_REGION=REGION,
            AWS_DEFAULT_REGION=REGION,
            AWS_EC2_METADATA_DISABLED="true",
            AWS_ENDPOINT_URL_BEDROCK_RUNTIME=self.emulator_url,
            AWS_ENDPOINT_URL_BEDROCK=self.moto_url,
            AWS_ENDPOINT_URL_DYNAMODB=self.moto_url,
            AWS_ENDPOINT_URL_CLOUDWATCH=self.moto_url,
            PYTHONPATH=os.pathsep.join(str(p) for p in (package, ROOT / "functions", ROOT / "scripts")),
        )
        return env


def lambda_package() -> Path:
    """functions/requirements.txt installed on its own, as `sam build` packages it (for this
    machine's Python), once per change of the file: the dev venv holds more than Lambda does
    (aws-sam-cli's pyOpenSSL, awscrt and rich, which botocore and httpx import when present)."""
    wanted = REQUIREMENTS.read_text(encoding="utf-8")
    marker = PACKAGE / "requirements.txt"
    if not marker.exists() or marker.read_text(encoding="utf-8") != wanted:
        shutil.rmtree(PACKAGE, ignore_errors=True)
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        installed = subprocess.run(
            [*pip, "--target", str(PACKAGE), "--requirement", str(REQUIREMENTS)],
            capture_output=True,
            text=True,
        )
        if not (PACKAGE / "boto3").is_dir():  # pip also complains about the venv: judge by the result
            raise RuntimeError(f"installing {REQUIREMENTS.name} failed:\n{installed.stderr[-3000:]}")
        marker.write_text(wanted, encoding="utf-8")
    return PACKAGE


@contextlib.contextmanager
def services() -> Iterator[Services]:
    import boto3
    from moto.server import ThreadedMotoServer

    from bedrock_spend_local.emulator import BedrockEmulator
    from bedrock_spend_local.moto_fixes import faster_moto
    from bedrock_spend_local.tables import create_tables

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per moto request
    with contextlib.ExitStack() as stack:
        stack.enter_context(faster_moto())
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        stack.callback(moto.stop)
        host, port = moto.get_host_and_port()
        emulator = stack.enter_context(BedrockEmulator())
        found = Services(f"http://{host}:{port}", emulator.url)
        dynamodb = boto3.client("dynamodb", endpoint_url=found.moto_url, region_name=REGION, **_keys())
        create_tables(dynamodb, TABLES)
        yield found


def _keys() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }


# --- what the callers send ------------------------------------------------------------------------

CONTEXT = json.loads((ROOT / "events" / "invoke_model.json").read_text(encoding="utf-8"))["requestContext"]


def anthropic_body(prompt: str, max_tokens: int = 200) -> dict[str, Any]:
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
    }


def stream_body(gap_ms: int) -> bytes:
    """The emulator's longest Anthropic stream, ``gap_ms`` between events: 16 events.

    Its reply has 5 + (input tokens % 40) words, input tokens = prompt words + 3: 36 words make
    the longest, 44 words in 11 deltas of 4, between 5 framing events.
    """
    prompt = " ".join(["word"] * 36) + (f" [[emulator chunk_delay_ms={gap_ms}]]" if gap_ms else "")
    return json.dumps(anthropic_body(prompt)).encode()


INVOKE_BODY = json.dumps({"modelId": HAIKU, "body": anthropic_body("Say hello in three languages.")}).encode()


@dataclass(frozen=True)
class Target:
    """One way to reach Bedrock: the emulator itself, the proxy app, or the local stack."""

    name: str
    base_url: str
    headers: Callable[[], dict[str, str]]
    verify: str | bool = False


def direct(url: str) -> Target:
    return Target("emulator", url, lambda: {"content-type": "application/json"})


def through_proxy(url: str) -> Target:
    """The proxy app, called as the Lambda Web Adapter calls it: the request context as a header."""

    def headers() -> dict[str, str]:
        context = dict(CONTEXT, requestId=str(uuid.uuid4()), requestTimeEpoch=int(time.time() * 1000))
        return {"content-type": "application/json", "x-amzn-request-context": json.dumps(context)}

    return Target("proxy", url, headers)


# --- the load script ------------------------------------------------------------------------------


def event_times(client: httpx.Client, target: Target, body: bytes) -> list[float]:
    """Seconds from sending a streamed call to the arrival of each whole event-stream frame."""
    times: list[float] = []
    buffer = bytearray()
    began = time.perf_counter()
    with client.stream(
        "POST", target.base_url + STREAM_PATH, content=body, headers=target.headers()
    ) as answer:
        if answer.status_code != 200:
            raise RuntimeError(f"{target.name}: HTTP {answer.status_code}: {answer.read()[:300]!r}")
        for chunk in answer.iter_raw():
            arrived = time.perf_counter() - began
            buffer += chunk
            # A frame starts with its total length (big-endian uint32): one read may end several.
            while len(buffer) >= 4 and len(buffer) >= (length := int.from_bytes(buffer[:4], "big")):
                times.append(arrived)
                del buffer[:length]
    return times


def invoke(client: httpx.Client, target: Target) -> None:
    answer = client.post(target.base_url + "/invoke-model", content=INVOKE_BODY, headers=target.headers())
    if answer.status_code != 200:
        raise RuntimeError(f"{target.name}: HTTP {answer.status_code}: {answer.text[:300]}")


def measure_relay(
    clients: Mapping[str, httpx.Client], targets: Sequence[Target], plan: Plan
) -> dict[str, Any]:
    """Per-event arrival through each target minus straight from the emulator, calls interleaved."""
    body = stream_body(plan.gap_ms)
    added: dict[str, list[float]] = {p.name: [] for p in targets[1:]}
    between: dict[str, list[float]] = {p.name: [] for p in targets[1:]}
    for _ in range(plan.relay_calls):
        arrivals = {p.name: event_times(clients[p.name], p, body) for p in targets}
        reference = arrivals[targets[0].name]
        for p in targets[1:]:
            times = arrivals[p.name]
            if len(times) != len(reference):
                raise RuntimeError(f"{p.name} relayed {len(times)} events of {len(reference)}")
            added[p.name] += [b - a for a, b in zip(reference, times, strict=True)]
            # The same, with the first event's delay taken out: what relaying each later event adds.
            between[p.name] += [
                (b - times[0]) - (a - reference[0]) for a, b in zip(reference, times, strict=True)
            ][1:]
    return {"added": added, "between": between, "events": len(reference)}


def measure_ttfb(
    clients: Mapping[str, httpx.Client], targets: Sequence[Target], plan: Plan
) -> dict[str, Any]:
    body = stream_body(0)
    first: dict[str, list[float]] = {p.name: [] for p in targets}
    for _ in range(plan.ttfb_calls):
        for p in targets:
            first[p.name].append(event_times(clients[p.name], p, body)[0])
    reference = first[targets[0].name]
    added = {p.name: [b - a for a, b in zip(reference, first[p.name], strict=True)] for p in targets[1:]}
    return {"first": first, "added": added}


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def measure_proxy_cpu(
    process: psutil.Process, client: httpx.Client, proxy: Target, plan: Plan
) -> dict[str, list[float]]:
    """The proxy process's CPU time per call, over runs of ``cpu_calls`` calls, kinds interleaved."""
    body = stream_body(0)
    calls: dict[str, Callable[[], object]] = {
        "invoke": lambda: invoke(client, proxy),
        "stream": lambda: event_times(client, proxy, body),
    }
    per_call: dict[str, list[float]] = {kind: [] for kind in calls}
    for call in calls.values():  # warm-up: clients, connections, the price book
        for _ in range(plan.cpu_calls):
            call()
    for _ in range(plan.cpu_runs):
        for kind, call in calls.items():
            before = cpu_seconds(process)
            for _ in range(plan.cpu_calls):
                call()
            per_call[kind].append((cpu_seconds(process) - before) / plan.cpu_calls)
    return per_call


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/<pid>/status")


# --- the proxy process ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Proxy:
    process: subprocess.Popen[bytes]
    url: str
    first_answer: float  # seconds from spawning the interpreter to the first answer received


@contextlib.contextmanager
def proxy_process(
    env: Mapping[str, str], python: Sequence[str] = (), log: Path | None = None
) -> Iterator[Proxy]:
    """The proxy under uvicorn, as run.sh starts it, from spawn to its first answer."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        stderr = stack.enter_context(log.open("wb")) if log else subprocess.DEVNULL
        began = time.perf_counter()
        process = subprocess.Popen(
            [*PYTHON, *python, *UVICORN, "--port", str(port), *UVICORN_QUIET],
            env=dict(env),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            answered = first_answer(process, through_proxy(url), log)
            yield Proxy(process, url, answered - began)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def first_answer(process: subprocess.Popen[bytes], proxy: Target, log: Path | None) -> float:
    """Call the proxy until it answers (a refused connection means it is not listening yet)."""
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=30) as client:
        while True:
            try:
                invoke(client, proxy)
                return time.perf_counter()
            except httpx.ConnectError:
                if process.poll() is not None or time.monotonic() > deadline:
                    detail = log.read_text(errors="replace")[-3000:] if log else ""
                    raise RuntimeError(f"the proxy did not start:\n{detail}") from None
                time.sleep(0.002)


# --- the reference design's handler ------------------------------------------------------------------

# A fresh interpreter imports the handler module, answers once ("answered"), then, for the CPU
# figures, makes `runs` runs of `calls` calls after as many warm-up calls.
BASELINE = r"""
import json, resource, sys, time, uuid
import bench_baseline
template, runs, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def call():
    event = json.loads(template)
    event["requestContext"].update(requestId=str(uuid.uuid4()), requestTimeEpoch=int(time.time() * 1000))
    answer = bench_baseline.lambda_handler(event, None)
    assert answer["statusCode"] == 200, answer
call()
print("bench: answered", flush=True)
for _ in range(calls if runs else 0):
    call()
cpu = []
for _ in range(runs):
    began = time.process_time()
    for _ in range(calls):
        call()
    cpu.append((time.process_time() - began) / calls)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print("bench:", json.dumps({"cpu": cpu, "peak_rss": rss}), flush=True)
"""


def run_baseline(env: Mapping[str, str], runs: int, calls: int, python: Sequence[str] = ()) -> dict[str, Any]:
    """The reference handler in a fresh interpreter: time to its first answer, CPU per call, RSS."""
    event = json.loads((ROOT / "events" / "invoke_model.json").read_text(encoding="utf-8"))
    with tempfile.TemporaryFile("w+") as errors:
        began = time.perf_counter()
        process = subprocess.Popen(
            [*PYTHON, *python, "-c", BASELINE, json.dumps(event), str(runs), str(calls)],
            env={**env, "POWERTOOLS_SERVICE_NAME": "bench-baseline"},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:  # the handler logs to stdout too
            if line == "bench: answered\n":
                break
        answered = time.perf_counter() - began
        rest = process.stdout.read()
        process.wait(timeout=300)
        errors.seek(0)
        stderr = errors.read()
    found = [line.removeprefix("bench: ") for line in rest.splitlines() if line.startswith("bench: ")]
    if process.returncode != 0 or not found:
        raise RuntimeError(f"the reference handler failed:\n{stderr[-3000:]}")
    return {"first_answer": answered, "stderr": stderr, **json.loads(found[-1])}


# --- cold start -------------------------------------------------------------------------------------

IMPORTTIME_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)$")


def import_time_by_package(stderr: str) -> dict[str, float]:
    """Seconds of ``-X importtime`` self time per top-level package, every import depth included."""
    found: dict[str, float] = {}
    for line in stderr.splitlines():
        match = IMPORTTIME_LINE.match(line)
        if match:
            package = match.group(4).split(".")[0]
            found[package] = found.get(package, 0.0) + int(match.group(1)) / 1e6
    return found


def measure_cold_starts(env: Mapping[str, str], plan: Plan) -> dict[str, Any]:
    """Spawn to first answer: the proxy under uvicorn vs the reference handler, runs interleaved."""
    first: dict[str, list[float]] = {"proxy": [], "baseline": [], "interpreter": []}
    with proxy_process(env):  # compiles .pyc files and warms the page cache; not counted
        run_baseline(env, 0, 0)
    for _ in range(plan.cold_runs):
        with proxy_process(env) as proxy:
            first["proxy"].append(proxy.first_answer)
        first["baseline"].append(run_baseline(env, 0, 0)["first_answer"])
        began = time.perf_counter()
        subprocess.run([*PYTHON, "-c", "pass"], env=dict(env), check=True)
        first["interpreter"].append(time.perf_counter() - began)
    # Where the time goes: every import up to the first answer (lazy ones included).
    startup = subprocess.run(
        [*PYTHON, "-X", "importtime", "-c", "pass"],
        env=dict(env),
        capture_output=True,
        text=True,
        check=True,
    )
    skipped = set(import_time_by_package(startup.stderr))
    imports: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        log = Path(scratch) / "proxy.err"
        with proxy_process(env, ["-X", "importtime"], log):
            pass
        imports["proxy"] = import_time_by_package(log.read_text(errors="replace"))
    imports["baseline"] = import_time_by_package(run_baseline(env, 0, 0, ["-X", "importtime"])["stderr"])
    top = {
        name: dict(sorted(((m, s) for m, s in found.items() if m not in skipped), key=lambda i: -i[1])[:8])
        for name, found in imports.items()
    }
    return {
        "first": first,
        "imports": top,
        "import_total": {n: sum(v for m, v in f.items() if m not in skipped) for n, f in imports.items()},
    }


# --- the local stack ----------------------------------------------------------------------------------


def serve_stack(emulator_url: str, out: Path) -> int:
    """Run the local stack in front of ``emulator_url`` until stdin closes; its address goes to ``out``."""
    from bedrock_spend_local.server import LocalStack

    os.environ.update(CREDENTIALS, AWS_EC2_METADATA_DISABLED="true")
    with LocalStack(
        port=0,
        region=REGION,
        bedrock="endpoint",
        bedrock_endpoint=emulator_url,
        log_dir=None,
        echo_logs=False,
        access_log=False,
    ) as stack:
        written = out.with_suffix(".tmp")
        written.write_text(json.dumps({"url": stack.url, "key": stack.demo_key, "ca": str(stack.ca_file)}))
        written.replace(out)  # whole or not at all: the bench polls for it
        sys.stdin.read()
    return 0


@contextlib.contextmanager
def local_stack(emulator_url: str) -> Iterator[Target | str]:
    """The local stack as a target, or why it could not start."""
    with tempfile.TemporaryDirectory(prefix="bench-stack-") as scratch:
        info, log = Path(scratch) / "stack.json", Path(scratch) / "stack.err"
        with log.open("wb") as errors:
            server = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--serve-stack", emulator_url, str(info)],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
        try:
            deadline = time.monotonic() + 60
            while not info.exists() and server.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if not info.exists():
                lines = log.read_text(errors="replace").strip().splitlines()
                yield f"it did not start: {lines[-1] if lines else 'no output'}"
                return
            found = json.loads(info.read_text())
            key = found["key"]
            yield Target(
                "local stack",
                found["url"],
                lambda: {"content-type": "application/json", "authorization": f"Bearer {key}"},
                verify=found["ca"],
            )
        finally:
            assert server.stdin is not None
            server.stdin.close()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


# --- the run -------------------------------------------------------------------------------------------


def bench(plan: Plan) -> tuple[dict[str, Any], list[str]]:
    results: dict[str, Any] = {}
    notes: list[str] = []
    started, load = time.perf_counter(), os.getloadavg()[0]

    def step(title: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {title}", file=sys.stderr, flush=True)

    step("the Lambda package")
    package = lambda_package()
    with services() as found:
        env = found.environment(package)
        step("cold starts")
        results["cold"] = measure_cold_starts(env, plan)
        with contextlib.ExitStack() as stack:
            proxy = stack.enter_context(proxy_process(env))
            stack_target = stack.enter_context(local_stack(found.emulator_url))
            targets = [direct(found.emulator_url), through_proxy(proxy.url)]
            if isinstance(stack_target, str):
                notes.append(f"The local stack was not measured: {stack_target}")
            else:
                targets.append(stack_target)
            clients = {
                p.name: stack.enter_context(httpx.Client(timeout=60, verify=p.verify)) for p in targets
            }
            for p in targets:  # connections, clients and the stack's authorizer cache, not counted
                event_times(clients[p.name], p, stream_body(0))
            step(f"relay latency over {', '.join(p.name for p in targets)}")
            results["relay"] = measure_relay(clients, targets, plan)
            step("time to first event")
            results["ttfb"] = measure_ttfb(clients, targets, plan)
            step("proxy CPU per call")
            process = psutil.Process(proxy.process.pid)
            results["cpu"] = measure_proxy_cpu(process, clients["proxy"], targets[1], plan)
            results["rss"] = {"proxy": peak_rss_bytes(proxy.process.pid)}
        step("reference handler CPU per call")
        baseline = run_baseline(env, plan.cpu_runs, plan.cpu_calls)
        results["cpu"]["baseline"] = baseline["cpu"]
        results["rss"]["baseline"] = baseline["peak_rss"]
    results["load"] = (load, os.getloadavg()[0])
    results["elapsed"] = time.perf_counter() - started
    return results, notes


# --- the report ------------------------------------------------------------------------------------------


def suite(results: Mapping[str, Any]) -> pyperf.BenchmarkSuite:
    """Every measured series as a pyperf benchmark (one run each: each comes from one process).

    Only the first run collects the machine's metadata. Paired differences (what a target adds)
    can be negative, which pyperf does not hold: they are summarised by :func:`summary`.
    """
    named: list[tuple[str, Sequence[float], str]] = [
        *((f"first-event/{target}", values, "second") for target, values in results["ttfb"]["first"].items()),
        *((f"cpu-per-call/{kind}", values, "second") for kind, values in results["cpu"].items()),
        *((f"cold-start/{name}", values, "second") for name, values in results["cold"]["first"].items()),
        *((f"peak-rss/{name}", [value], "byte") for name, value in results["rss"].items()),
    ]
    return pyperf.BenchmarkSuite(
        [
            pyperf.Benchmark(
                [pyperf.Run(list(values), metadata={"name": name, "unit": unit}, collect_metadata=index == 0)]
            )
            for index, (name, values, unit) in enumerate(named)
        ]
    )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def summary(values: Sequence[float]) -> str:
    """Median, p95 and the interquartile range of a sample that may hold negative values."""
    quartiles = statistics.quantiles(values, n=4, method="inclusive")
    p95 = statistics.quantiles(values, n=20, method="inclusive")[18]
    return (
        f"{ms(statistics.median(values))} (p95 {ms(p95)}, IQR {ms(quartiles[0])} to {ms(quartiles[2])}, "
        f"n={len(values)})"
    )


def render(
    results: Mapping[str, Any], benches: pyperf.BenchmarkSuite, notes: Sequence[str], plan: Plan
) -> str:
    def get(name: str) -> pyperf.Benchmark:
        return benches.get_benchmark(name)

    def spread(name: str) -> str:
        b = get(name)
        p95 = f", p95 {ms(b.percentile(95))}" if b.get_nvalue() >= 10 else ""
        return f"{ms(b.median())} (stdev {ms(b.stdev())}{p95}, n={b.get_nvalue()})"

    machine = benches.get_metadata() or benches.get_benchmarks()[0].get_metadata()
    relay, ttfb = results["relay"], results["ttfb"]
    lines = [
        f"Run of {machine.get('date', '')[:16]}, {results['elapsed']:.0f} s in all. Machine: "
        f"{machine.get('cpu_count')} x {machine.get('cpu_model_name')} ({machine.get('cpu_freq', '?')}), "
        f"{machine.get('platform')}, Python {machine.get('python_version')}; 1-minute load average "
        f"{results['load'][0]:.1f} at the start, {results['load'][1]:.1f} at the end (the cores are shared).",
        "",
        "| What | Value | How |",
        "|---|---|---|",
    ]
    for target, values in relay["added"].items():
        verdict = "meets" if statistics.median(values) * 1000 < RELAY_TARGET_MS else "misses"
        lines.append(
            f"| Relay delay per event, {target} | {summary(values)} | arrival minus the same event's "
            f"straight from the emulator; {plan.relay_calls} calls x {relay['events']} events "
            f"{plan.gap_ms} ms apart, interleaved; {verdict} the < {RELAY_TARGET_MS:g} ms median target |"
        )
        lines.append(
            f"| ... later events against the first, {target} | {summary(relay['between'][target])} | "
            "each event's delay minus its call's first event's: below 0, later events cost less |"
        )
    for target in ttfb["first"]:
        lines.append(
            f"| Time to first event, {target} | {spread(f'first-event/{target}')} | "
            f"{plan.ttfb_calls} streamed calls per target, interleaved, keep-alive |"
        )
    for target, values in ttfb["added"].items():
        lines.append(
            f"| Time to first event added, {target} | {summary(values)} | per pair of interleaved calls |"
        )
    baseline_cpu = get("cpu-per-call/baseline").median()
    for kind, label in (("invoke", "`/invoke-model`"), ("stream", "InvokeModelWithResponseStream")):
        b = get(f"cpu-per-call/{kind}")
        lines.append(
            f"| Proxy CPU per call, {label} | {spread(f'cpu-per-call/{kind}')} | "
            f"**{b.median() / baseline_cpu:.2f}x** the reference handler's; process CPU time (uvicorn, the "
            f"app, its ledger write), runs of {plan.cpu_calls} calls |"
        )
    lines.append(
        f"| Reference handler CPU per call, InvokeModel | {spread('cpu-per-call/baseline')} | "
        f"the handler alone, its PutMetricData included, runs of {plan.cpu_calls} calls |"
    )
    ratio = get("cold-start/proxy").median() / get("cold-start/baseline").median()
    lines += [
        f"| Cold start, proxy | {spread('cold-start/proxy')} | spawn to first answer: interpreter, uvicorn, "
        f"the app, its first call; **{ratio:.2f}x** the reference handler's |",
        f"| Cold start, reference handler | {spread('cold-start/baseline')} | spawn to first answer: "
        "interpreter, import, first invocation |",
        f"| Cold start, bare interpreter | {spread('cold-start/interpreter')} | `python -c pass` |",
    ]
    rss_proxy, rss_base = results["rss"]["proxy"], results["rss"]["baseline"]
    lines.append(
        f"| Peak RSS, proxy process | {rss_proxy / 2**20:.1f} MiB | **{rss_proxy / rss_base:.2f}x** the "
        f"reference handler's process ({rss_base / 2**20:.1f} MiB), both after their CPU runs |"
    )
    lines += [
        "",
        "Import time up to the first answer by package (`-X importtime` self time, all depths; "
        "packages the bare interpreter imports left out):",
        "",
    ]
    for name, top in results["cold"]["imports"].items():
        listed = ", ".join(f"`{module}` {ms(seconds)}" for module, seconds in top.items())
        lines.append(f"- {name} ({ms(results['cold']['import_total'][name])} in all): {listed}")
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def write_doc(generated: str, path: Path = DOC) -> None:
    text = path.read_text(encoding="utf-8")
    head = text.split(GENERATED_MARKER, 1)[0].rstrip() + "\n\n" if GENERATED_MARKER in text else text
    path.write_text(f"{head}{GENERATED_MARKER}\n\n{generated}", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a few calls of each, to check the script (<1 min)"
    )
    parser.add_argument("--no-doc", action="store_true", help=f"print the table; leave {DOC.name} alone")
    parser.add_argument("--serve-stack", nargs=2, metavar=("EMULATOR_URL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_stack:
        return serve_stack(args.serve_stack[0], Path(args.serve_stack[1]))
    plan = QUICK if args.quick else Plan()
    results, notes = bench(plan)
    benches = suite(results)
    RESULTS.parent.mkdir(exist_ok=True)
    benches.dump(str(RESULTS.with_stem("bench-quick") if args.quick else RESULTS), replace=True)
    generated = render(results, benches, notes, plan)
    print(generated)
    if not args.no_doc and not args.quick:
        write_doc(generated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
