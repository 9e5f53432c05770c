"""Prometheus metrics: one registry per server (never the process-global one), filled once per request.

Nothing here runs per token. A request is observed once, when it ends (`RequestObservation`), from what its
admission ticket measured; state that is cheap to read (queue depth, loaded models, requests in flight) is read
when `/metrics` is scraped. Label sets are bounded: route templates, dialects, the registry's model ids, status
codes, and a key id only with `metrics_per_key`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from somner.errors import (
    Forbidden,
    HeadersTooLarge,
    PayloadTooLarge,
    RateLimited,
    SomnerError,
    Unauthorized,
    Unavailable,
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_TOKEN_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
_LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)

REJECTION_REASONS = ("rate_limit", "quota", "queue_full", "auth", "size")
QUOTA_CODE = "insufficient_quota"
QUEUE_CODES = ("queue_full", "queue_timeout")


def rejection_reason(error: SomnerError) -> str | None:
    """Why the gateway refused a request, as a `somner_rejected_requests_total` label, or None when the error is
    not a refusal (a bad request, an engine failure)."""
    if isinstance(error, Unauthorized | Forbidden):
        return "auth"
    if isinstance(error, RateLimited):
        return "quota" if error.code == QUOTA_CODE else "rate_limit"
    if isinstance(error, Unavailable) and error.code in QUEUE_CODES:
        return "queue_full"
    if isinstance(error, PayloadTooLarge | HeadersTooLarge):
        return "size"
    return None


@dataclass(frozen=True, slots=True)
class ModelGauge:
    """What the scrape-time collector reports for one model."""

    model: str
    loaded: bool
    in_flight: int
    memory_bytes: int
    slots: int
    placement: Mapping[str, int] = field(default_factory=dict)  # the estimate per resource (ram, gpu0, ...)


@dataclass(frozen=True, slots=True)
class GpuGauge:
    """One GPU's last reading, for the scrape-time collector."""

    index: int
    used_bytes: int
    total_bytes: int
    utilization: float | None


@dataclass(frozen=True, slots=True)
class RequestObservation:
    route: str
    dialect: str
    model: str
    status: int
    seconds: float
    key: str = ""
    ttft_seconds: float | None = None
    token_gap_seconds: float | None = None  # the mean gap between streamed tokens after the first
    prompt_tokens: int = 0
    completion_tokens: int = 0
    queue_wait_seconds: float | None = None


class _StateCollector(Collector):
    def __init__(
        self,
        queue_depth: Callable[[], int],
        models: Callable[[], Iterable[ModelGauge]],
        gpus: Callable[[], Iterable[GpuGauge]],
    ) -> None:
        self._queue_depth = queue_depth
        self._models = models
        self._gpus = gpus

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("somner_queue_depth", "Requests waiting for a turn in the fair queue.")
        depth.add_metric([], self._queue_depth())
        yield depth
        models = list(self._models())
        loaded = GaugeMetricFamily("somner_loaded_models", "Models loaded now.")
        loaded.add_metric([], sum(1 for m in models if m.loaded))
        yield loaded
        in_flight = GaugeMetricFamily(
            "somner_in_flight_requests", "Requests holding a model now (admitted, not finished).", labels=["model"]
        )
        memory = GaugeMetricFamily(
            "somner_model_memory_bytes",
            "Estimated memory of each loaded model (weights and context).",
            labels=["model"],
        )
        placed = GaugeMetricFamily(
            "somner_model_device_memory_bytes",
            "Estimated memory of each loaded model per device: ram, gpu0, gpu1, ...",
            labels=["model", "device"],
        )
        busy = GaugeMetricFamily(
            "somner_engine_slots_busy", "Engine sequence slots in use, per model.", labels=["model"]
        )
        for model in models:
            in_flight.add_metric([model.model], model.in_flight)
            if model.loaded:
                memory.add_metric([model.model], model.memory_bytes)
                busy.add_metric([model.model], min(model.in_flight, model.slots))
                for device, amount in sorted(model.placement.items()):
                    placed.add_metric([model.model, device], amount)
        yield in_flight
        yield memory
        yield placed
        yield busy
        yield from self._gpu_metrics()

    def _gpu_metrics(self) -> Iterator[Metric]:
        used = GaugeMetricFamily("somner_gpu_memory_used_bytes", "Memory in use on each GPU.", labels=["gpu"])
        total = GaugeMetricFamily("somner_gpu_memory_total_bytes", "Memory of each GPU.", labels=["gpu"])
        busy = GaugeMetricFamily(
            "somner_gpu_utilization_ratio", "Share of the last sample period a kernel ran on each GPU.", labels=["gpu"]
        )
        for device in self._gpus():
            label = [str(device.index)]
            used.add_metric(label, device.used_bytes)
            total.add_metric(label, device.total_bytes)
            if device.utilization is not None:
                busy.add_metric(label, device.utilization)
        yield used
        yield total
        yield busy


_Children = tuple[Counter, Histogram, tuple[Histogram, Histogram, Counter, Counter] | None]


class Metrics:
    """The server's instruments. `per_key` adds a `key` label to the request counter (off: bounded labels)."""

    def __init__(self, *, per_key: bool = False) -> None:
        self.per_key = per_key
        self._children: dict[tuple[str, str, str, int, str], _Children] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        request_labels = ["route", "dialect", "model", "status", *(["key"] if per_key else [])]
        self.requests = Counter("somner_requests", "Requests answered.", request_labels, registry=r)
        self.duration = Histogram(
            "somner_request_duration_seconds",
            "Time from a request's arrival to the end of its response (streams included).",
            ["route", "dialect", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "somner_time_to_first_token_seconds",
            "Time from admission to the first generated token.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.token_gap = Histogram(
            "somner_inter_token_latency_seconds",
            "Mean gap between generated tokens after the first, one observation per request.",
            ["model"],
            buckets=_TOKEN_GAP_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter("somner_prompt_tokens", "Prompt tokens processed.", ["model"], registry=r)
        self.completion_tokens = Counter(
            "somner_completion_tokens", "Completion tokens generated.", ["model"], registry=r
        )
        self.queue_wait = Histogram(
            "somner_queue_wait_seconds",
            "Time admitted requests waited for a turn in the fair queue.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            "somner_rejected_requests", "Requests the gateway refused, by reason.", ["reason"], registry=r
        )
        for reason in REJECTION_REASONS:
            self.rejected.labels(reason)  # every reason present from the start, at zero
        self.load_duration = Histogram(
            "somner_model_load_duration_seconds",
            "Time to load a model (engine start to ready).",
            ["model"],
            buckets=_LOAD_BUCKETS,
            registry=r,
        )
        self.load_failures = Counter("somner_model_load_failures", "Model loads that failed.", ["model"], registry=r)

    def watch_state(
        self,
        queue_depth: Callable[[], int],
        models: Callable[[], Iterable[ModelGauge]],
        gpus: Callable[[], Iterable[GpuGauge]] = tuple,
    ) -> None:
        """Report live state, read at each scrape."""
        self.registry.register(_StateCollector(queue_depth, models, gpus))

    def request(self, seen: RequestObservation) -> None:
        labels = (seen.route, seen.dialect, seen.model, seen.status, seen.key if self.per_key else "")
        children = self._children.get(labels)
        if children is None:
            children = self._children[labels] = self._children_for(seen)
        requests, duration, per_model = children
        requests.inc()
        duration.observe(seen.seconds)
        if per_model is not None:
            ttft, token_gap, prompt_tokens, completion_tokens = per_model
            if seen.ttft_seconds is not None:
                ttft.observe(seen.ttft_seconds)
            if seen.token_gap_seconds is not None:
                token_gap.observe(seen.token_gap_seconds)
            if seen.prompt_tokens:
                prompt_tokens.inc(seen.prompt_tokens)
            if seen.completion_tokens:
                completion_tokens.inc(seen.completion_tokens)
        if seen.queue_wait_seconds is not None:
            self.queue_wait.observe(seen.queue_wait_seconds)

    def _children_for(self, seen: RequestObservation) -> _Children:
        """The labelled series one kind of request moves (looked up once per label set: `labels()` costs a lock
        and a validation each time, and a request moves up to six series)."""
        labels = [seen.route, seen.dialect, seen.model, str(seen.status)]
        if self.per_key:
            labels.append(seen.key)
        model = seen.model
        per_model = (
            (
                self.ttft.labels(model),
                self.token_gap.labels(model),
                self.prompt_tokens.labels(model),
                self.completion_tokens.labels(model),
            )
            if model
            else None
        )
        return self.requests.labels(*labels), self.duration.labels(seen.route, seen.dialect, model), per_model

    def refused(self, reason: str) -> None:
        self.rejected.labels(reason).inc()

    def model_loaded(self, model: str, seconds: float | None) -> None:
        """A load ended: in `seconds`, or failed (None)."""
        if seconds is None:
            self.load_failures.labels(model).inc()
        else:
            self.load_duration.labels(model).observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def as_json(self) -> dict[str, list[dict[str, object]]]:
        """The same samples as the text format, as {family: [{"labels": {...}, "value": v, "name": sample}]}."""
        out: dict[str, list[dict[str, object]]] = {}
        for family in self.registry.collect():
            out[family.name] = [
                {"name": sample.name, "labels": dict(sample.labels), "value": sample.value} for sample in family.samples
            ]
        return out
