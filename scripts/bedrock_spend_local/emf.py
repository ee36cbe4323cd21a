"""Embedded Metric Format lines -> CloudWatch metrics, as CloudWatch Logs does for Lambda.

In AWS, a log line that is an EMF object becomes one metric per (metric, dimension set)
without any API call from the function. Locally, :class:`MetricsForwarder` parses the lines
the functions print and sends them to the CloudWatch API of the moto server with
PutMetricData, from a background thread, so a request never waits for (or fails on) it.

Spec: https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

_T = TypeVar("_T")
logger = logging.getLogger(__name__)

# CloudWatch limits an EMF object must respect to be turned into metrics.
MAX_DIMENSIONS = 30
MAX_METRICS_PER_DIRECTIVE = 100
MAX_VALUES_PER_METRIC = 100
# PutMetricData limits per call.
MAX_DATUMS_PER_CALL = 1000
MAX_VALUES_PER_DATUM = 150


@dataclass(frozen=True, slots=True)
class Datum:
    namespace: str
    name: str
    unit: str
    values: tuple[float, ...]
    dimensions: tuple[tuple[str, str], ...]
    timestamp: datetime
    storage_resolution: int = 60

    def to_put_metric_data(self) -> dict[str, Any]:
        datum: dict[str, Any] = {
            "MetricName": self.name,
            "Dimensions": [{"Name": name, "Value": value} for name, value in self.dimensions],
            "Timestamp": self.timestamp,
            "Unit": self.unit,
            "StorageResolution": self.storage_resolution,
        }
        if len(self.values) == 1:
            datum["Value"] = self.values[0]
        else:
            counts = Counter(self.values)
            datum["Values"] = list(counts)
            datum["Counts"] = [float(count) for count in counts.values()]
        return datum


def is_emf(record: Any) -> bool:
    return (
        isinstance(record, dict)
        and isinstance(record.get("_aws"), dict)
        and isinstance(record["_aws"].get("CloudWatchMetrics"), list)
    )


def parse_line(line: str) -> list[Datum]:
    """The metrics an EMF log line defines; [] for any other line or an invalid EMF object."""
    line = line.strip()
    if not line.startswith("{") or '"_aws"' not in line:
        return []
    try:
        record = json.loads(line)
    except ValueError:
        return []
    return parse_record(record) if is_emf(record) else []


def parse_record(record: dict[str, Any]) -> list[Datum]:
    metadata = record["_aws"]
    stamp = metadata.get("Timestamp")
    if isinstance(stamp, bool) or not isinstance(stamp, int | float):
        return []  # "Timestamp" is required; CloudWatch drops the object without it
    timestamp = datetime.fromtimestamp(stamp / 1000, tz=UTC)
    data: list[Datum] = []
    for directive in metadata["CloudWatchMetrics"]:
        if not isinstance(directive, dict):
            continue
        namespace = directive.get("Namespace")
        metrics = directive.get("Metrics")
        dimension_sets = directive.get("Dimensions", [[]])
        if not isinstance(namespace, str) or not namespace or not isinstance(metrics, list):
            continue
        if not isinstance(dimension_sets, list) or len(metrics) > MAX_METRICS_PER_DIRECTIVE:
            continue
        for dimension_names in dimension_sets:
            dimensions = _dimensions(record, dimension_names)
            if dimensions is None:
                continue
            for metric in metrics:
                datum = _datum(record, metric, namespace, dimensions, timestamp)
                if datum is not None:
                    data.append(datum)
    return data


def _dimensions(record: dict[str, Any], names: Any) -> tuple[tuple[str, str], ...] | None:
    if not isinstance(names, list) or len(names) > MAX_DIMENSIONS:
        return None
    pairs = []
    for name in names:
        value = record.get(name) if isinstance(name, str) else None
        if not isinstance(value, str) or not value:
            return None  # a dimension must name a non-empty string member
        pairs.append((name, value))
    return tuple(pairs)


def _datum(
    record: dict[str, Any],
    metric: Any,
    namespace: str,
    dimensions: tuple[tuple[str, str], ...],
    timestamp: datetime,
) -> Datum | None:
    if not isinstance(metric, dict) or not isinstance(metric.get("Name"), str):
        return None
    raw = record.get(metric["Name"])
    values = raw if isinstance(raw, list) else [raw]
    numbers = tuple(
        float(v)
        for v in values[:MAX_VALUES_PER_METRIC]
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    )
    if not numbers or len(numbers) != len(values[:MAX_VALUES_PER_METRIC]):
        return None
    resolution = metric.get("StorageResolution", 60)
    return Datum(
        namespace=namespace,
        name=metric["Name"],
        unit=str(metric.get("Unit") or "None"),
        values=numbers,
        dimensions=dimensions,
        timestamp=timestamp,
        storage_resolution=1 if resolution == 1 else 60,
    )


class MetricsForwarder:
    """Parses EMF lines and puts their metrics into CloudWatch from one worker thread.

    ``submit`` never blocks on the network and never raises; ``flush`` waits until every
    line submitted so far has been sent (tests call it before reading metrics).
    """

    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self._client_factory = client_factory
        self._client: Any = None
        self._queue: queue.Queue[list[Datum] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.failed = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="emf-forwarder", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self.flush(timeout)
            self._queue.put(None)
            thread.join(timeout)

    def submit(self, line: str) -> bool:
        """Queue the metrics of ``line`` if it is an EMF object; True when it was one."""
        try:
            data = parse_line(line)
        except Exception:  # never let a malformed line reach the function that printed it
            logger.exception("EMF line could not be parsed")
            return False
        if data:
            self._queue.put(data)
        return bool(data)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the queue is drained; False on timeout."""
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)

    def _work(self) -> None:
        while True:
            data = self._queue.get()
            try:
                if data is None:
                    return
                self._send(data)
            except Exception as exc:  # noqa: BLE001 - metrics are best effort, never a crash
                self.failed += 1
                logger.warning("putting EMF metrics into local CloudWatch failed: %s", exc)
            finally:
                self._queue.task_done()

    def _send(self, data: list[Datum]) -> None:
        if self._client is None:
            self._client = self._client_factory()
        by_namespace: dict[str, list[dict[str, Any]]] = {}
        for datum in data:
            for values in _chunks(datum.values, MAX_VALUES_PER_DATUM):
                part = Datum(
                    datum.namespace,
                    datum.name,
                    datum.unit,
                    values,
                    datum.dimensions,
                    datum.timestamp,
                    datum.storage_resolution,
                )
                by_namespace.setdefault(datum.namespace, []).append(part.to_put_metric_data())
        for namespace, items in by_namespace.items():
            for batch in _chunks(tuple(items), MAX_DATUMS_PER_CALL):
                self._client.put_metric_data(Namespace=namespace, MetricData=list(batch))
                self.sent += len(batch)


def _chunks(items: tuple[_T, ...], size: int) -> list[tuple[_T, ...]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
