"""What the server counts and measures: GET /api/stats as JSON, GET /metrics in Prometheus' text format.

Every admitted request ends exactly once, as completed, failed (an error after admission, a 4xx included) or
cancelled (its client went away), so `admitted == active + completed + failed + cancelled` at any moment.
`rejected` counts 429 answers (a full queue at the door, or a full KV budget after admission: those end as
failed too). Latencies are the last `LATENCY_WINDOW` samples' quantiles; counts and sums cover the whole run.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch

LATENCY_WINDOW = 2048  # recent samples the quantiles are taken over
OUTCOMES = ("completed", "failed", "cancelled")


class Latencies:
    """Seconds between two events (request -> first token, token -> next token) of recent requests."""

    def __init__(self) -> None:
        self.recent: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.count = 0  # all samples, for /metrics
        self.total = 0.0  # their sum, seconds

    def add(self, seconds: float) -> None:
        self.recent.append(seconds)
        self.count += 1
        self.total += seconds

    def quantile(self, q: float) -> float | None:
        values = list(self.recent)  # a snapshot: the model thread appends while we read
        if not values:
            return None
        return float(torch.tensor(values, dtype=torch.float64).quantile(q))

    def to_dict(self) -> dict:
        return {"p50": self.quantile(0.5), "p95": self.quantile(0.95), "samples": len(self.recent)}


@dataclass
class Stats:
    """Counters a teacher (or a test) reads at GET /api/stats. Request counters change on the event loop; the
    batch, queue, token and latency fields on the model thread."""

    active: int = 0  # admitted and not yet ended
    admitted: int = 0
    rejected: int = 0  # 429 answers
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    kv_tokens: int = 0  # KV-cache tokens claimed by active requests
    tokens: int = 0  # tokens generated, all requests
    running_rows: int = 0  # rows in the batched step now
    waiting: int = 0  # requests' tasks and calls waiting for the model thread
    steps: int = 0  # batched decode steps run
    stepped_rows: int = 0  # rows over all those steps: stepped_rows / steps is the mean batch
    batched_prefills: int = 0  # scored prompts (echo with logprobs) prefilled beside others in one forward
    time_to_first_token: Latencies = field(default_factory=Latencies)  # from the request's start to its first step
    inter_token_latency: Latencies = field(default_factory=Latencies)  # between a request's successive steps

    def end(self, outcome: str) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
        self.active -= 1
        setattr(self, outcome, getattr(self, outcome) + 1)

    def to_dict(self, max_batch: int) -> dict:
        counters = {name: value for name, value in self.__dict__.items() if isinstance(value, int)}
        return {
            **counters,
            "max_batch": max_batch,
            "mean_batch_rows": self.stepped_rows / self.steps if self.steps else None,
            "time_to_first_token": self.time_to_first_token.to_dict(),
            "inter_token_latency": self.inter_token_latency.to_dict(),
        }


def prometheus_text(stats: Stats, max_batch: int, sessions: int) -> str:
    """The stats in Prometheus' text exposition format (version 0.0.4)."""
    lines: list[str] = []

    def metric(name: str, kind: str, help: str, samples: list[tuple[str, float | None]]) -> None:
        lines.extend([f"# HELP decodelab_{name} {help}", f"# TYPE decodelab_{name} {kind}"])
        lines.extend(f"decodelab_{name}{labels} {'NaN' if value is None else value}" for labels, value in samples)

    outcomes = [(f'{{outcome="{outcome}"}}', getattr(stats, outcome)) for outcome in OUTCOMES]
    metric("requests_total", "counter", "Admitted requests that ended, by how they ended.", outcomes)
    metric(
        "requests_rejected_total", "counter", "Requests answered 429 (queue or KV budget full).", [("", stats.rejected)]
    )
    metric("requests_active", "gauge", "Requests admitted and not yet ended.", [("", stats.active)])
    metric("queue_waiting", "gauge", "Requests waiting for the model thread.", [("", stats.waiting)])
    metric("batch_rows", "gauge", "Rows in the batched decode step now.", [("", stats.running_rows)])
    metric("batch_max_rows", "gauge", "Most rows the batched decode step takes (--max-batch).", [("", max_batch)])
    metric("decode_steps_total", "counter", "Batched decode steps run.", [("", stats.steps)])
    metric("decode_step_rows_total", "counter", "Rows over all batched decode steps.", [("", stats.stepped_rows)])
    metric("tokens_generated_total", "counter", "Tokens generated, all requests.", [("", stats.tokens)])
    metric("kv_tokens", "gauge", "KV-cache tokens claimed by active requests.", [("", stats.kv_tokens)])
    metric("sessions", "gauge", "Live explorer sessions.", [("", sessions)])
    for name, latencies, help in (
        ("time_to_first_token_seconds", stats.time_to_first_token, "From a request's start to its first token."),
        ("inter_token_latency_seconds", stats.inter_token_latency, "Between a request's successive tokens."),
    ):
        quantiles = [(f'{{quantile="{q}"}}', latencies.quantile(q)) for q in (0.5, 0.95)]
        metric(name, "summary", help, quantiles)
        lines.extend([f"decodelab_{name}_sum {latencies.total}", f"decodelab_{name}_count {latencies.count}"])
    return "\n".join(lines) + "\n"
