"""What one Redis round trip costs the gateway's limiter, for benchmarks/replicas.sh.

    python benchmarks/replicas_redis_rtt.py redis://127.0.0.1:6379/0 [--seconds 2] [--windows 0,1000,10000]

Prints one JSON object with latency percentiles in microseconds of
- `ping`: a bare PING (the network and client floor), and
- `reserve_<N>`: `RedisLimiter.reserve` (the check-and-reserve script every request of a key with limits runs
  before it is admitted) while that key's requests and tokens windows hold N events each.

One command at a time (c=1) from `redis.asyncio` on uvloop, the client and loop the gateway uses. Each reserve
adds an event to the window; it is removed again (untimed) so the window stays at N while it is measured. The
scratch keys live under the prefix `somner-bench-rtt` and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import uvloop

from somner.gateway.keys import KeyRights
from somner.gateway.ratelimit import Reservation, Verdict
from somner.gateway.ratelimit_redis import RedisLimiter

T = TypeVar("T")

PREFIX = "somner-bench-rtt"
# Limits no measurement can reach: every reserve is admitted, as in the benchmark's throughput runs.
RIGHTS = KeyRights(rpm=1_000_000_000, tpm=2_000_000_000)
FILL_BATCH = 5000


def percentiles(samples_ns: list[int]) -> dict[str, float | int]:
    """p50, p99, mean (µs) and the sample count."""
    ordered = sorted(samples_ns)
    if not ordered:
        return {"n": 0}

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1000.0, 1)

    return {
        "n": len(ordered),
        "p50_us": at(0.50),
        "p99_us": at(0.99),
        "mean_us": round(sum(ordered) / len(ordered) / 1000.0, 1),
    }


async def timed(
    call: Callable[[], Awaitable[T]], seconds: float, after: Callable[[T], Awaitable[None]] | None = None
) -> list[int]:
    """Durations (ns) of `call` awaited back to back for `seconds`; `after` (untimed) gets each result."""
    samples: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter_ns()
        result = await call()
        samples.append(time.perf_counter_ns() - started)
        if after is not None:
            await after(result)
    return samples


async def fill(limiter: RedisLimiter, key_id: str, events: int) -> None:
    """`events` fresh events (amount 1) in the key's requests and tokens windows, as `reserve` and `settle` add them."""
    now = time.time()
    for what in ("requests", "tokens"):
        key = f"{PREFIX}:{{{key_id}}}:{what}"
        for start in range(0, events, FILL_BATCH):
            count = min(FILL_BATCH, events - start)
            await limiter.client.zadd(key, {f"{uuid.uuid4().hex}:1": now for _ in range(count)})


async def measure(url: str, seconds: float, windows: list[int]) -> dict[str, object]:
    limiter = RedisLimiter.from_url(url, prefix=PREFIX)
    report: dict[str, object] = {"url": url, "seconds_each": seconds}
    key_ids: list[str] = []
    try:
        await limiter.client.ping()  # connect outside the measurement
        report["ping"] = percentiles(await timed(limiter.client.ping, seconds))
        for events in windows:
            key_id = f"rtt-{uuid.uuid4().hex}"
            key_ids.append(key_id)
            await fill(limiter, key_id, events)
            await limiter.reserve(key_id, RIGHTS, time.time())  # loads the script (EVALSHA's first NOSCRIPT)

            async def reserve(key_id: str = key_id) -> tuple[Verdict, Reservation | None]:
                return await limiter.reserve(key_id, RIGHTS, time.time())

            async def give_back(result: tuple[Verdict, Reservation | None]) -> None:
                verdict, reservation = result
                if not verdict.allowed or reservation is None:
                    raise RuntimeError("the reserve script refused a request under limits it cannot reach")
                await limiter.cancel(reservation)

            report[f"reserve_{events}"] = percentiles(await timed(reserve, seconds, give_back))
    finally:
        for key_id in key_ids:
            await limiter.client.delete(*(f"{PREFIX}:{{{key_id}}}:{what}" for what in ("requests", "tokens")))
        await limiter.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="redis://host:port/db")
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--windows", default="0,1000,10000", help="events in the key's windows, comma-separated")
    args = parser.parse_args()
    windows = [int(part) for part in str(args.windows).split(",") if part.strip()]
    print(json.dumps(uvloop.run(measure(args.url, args.seconds, windows))))


if __name__ == "__main__":
    main()
