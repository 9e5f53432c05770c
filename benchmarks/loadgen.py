"""Load generator for any OpenAI-compatible server: streamed requests at a fixed concurrency.

    python benchmarks/loadgen.py URL --model M --concurrency C --requests N --max-tokens T [--chat]

Prints one JSON object: time to first token (p50/p99), inter-token latency (p50/p99), output tokens/s,
requests/s and errors. Each request asks for exactly T tokens (`ignore_eos`, understood by llama-server and
Somner) at temperature 0, with a prompt made distinct per request so that no server answers from a cache.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field

import httpx

DEFAULT_PROMPT = "{i}. Write a long story about a robot who learns to paint, with many details."


@dataclass
class Result:
    ok: bool = False
    ttft: float | None = None
    gaps: list[float] = field(default_factory=list)
    tokens: int = 0
    error: str = ""


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def request_body(args: argparse.Namespace, i: int) -> tuple[str, dict[str, object]]:
    prompt = args.prompt.format(i=i)
    common: dict[str, object] = {
        "model": args.model,
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
        **args.sampling,
    }
    if args.chat:
        return "/v1/chat/completions", {**common, "messages": [{"role": "user", "content": prompt}]}
    return "/v1/completions", {**common, "prompt": prompt}


def content_of(event: dict[str, object], chat: bool) -> str:
    choices = event.get("choices")
    if not isinstance(choices, list) or not choices:
        return ""
    choice = choices[0]
    if chat:
        delta = choice.get("delta") or {}
        return str(delta.get("content") or "")
    return str(choice.get("text") or "")


async def one_request(client: httpx.AsyncClient, args: argparse.Namespace, i: int) -> Result:
    """One streamed request. A connection the server closed while idle in the pool is retried once, before any
    response, as HTTP clients do (llama-server closes idle keep-alive connections after a few seconds)."""
    result = await _attempt(client, args, i)
    if not result.ok and result.error.startswith(("RemoteProtocolError", "ConnectError")) and result.ttft is None:
        result = await _attempt(client, args, i)
    return result


async def _attempt(client: httpx.AsyncClient, args: argparse.Namespace, i: int) -> Result:
    path, body = request_body(args, i)
    result = Result()
    start = time.perf_counter()
    last: float | None = None
    usage_tokens: int | None = None
    try:
        async with client.stream("POST", path, json=body) as response:
            if response.status_code != 200:
                result.error = f"status {response.status_code}: {(await response.aread())[:200]!r}"
                return result
            buffer = b""
            async for raw in response.aiter_raw():
                buffer += raw
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    for line in block.split(b"\n"):
                        if not line.startswith(b"data:"):
                            continue
                        data = line[5:].strip()
                        if data == b"[DONE]":
                            continue
                        event = json.loads(data)
                        if "error" in event:
                            result.error = str(event["error"])[:200]
                            return result
                        usage = event.get("usage")
                        if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
                            usage_tokens = int(usage["completion_tokens"])
                        if content_of(event, args.chat):
                            now = time.perf_counter()
                            if last is None:
                                result.ttft = now - start
                            else:
                                result.gaps.append(now - last)
                            last = now
                            result.tokens += 1
        if usage_tokens is not None:
            result.tokens = usage_tokens
        result.ok = True
    except httpx.HTTPError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


async def run(args: argparse.Namespace) -> dict[str, object]:
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    async with httpx.AsyncClient(base_url=args.url, limits=limits, timeout=args.timeout, headers=headers) as client:
        # Warm-up: open one connection per concurrent client, so the measured requests all start on warm
        # connections at once instead of one on a warm connection and the rest behind TCP handshakes.
        warm = argparse.Namespace(**{**vars(args), "max_tokens": 2, "prompt": args.warmup_prompt or args.prompt})
        for w in range(args.warmup):
            await asyncio.gather(
                *(one_request(client, warm, -1 - w * args.concurrency - k) for k in range(args.concurrency))
            )
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(args.requests):
            queue.put_nowait(i)
        results: list[Result] = []

        async def worker() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                results.append(await one_request(client, args, i))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        duration = time.perf_counter() - start
    good = [r for r in results if r.ok]
    ttfts = [r.ttft for r in good if r.ttft is not None]
    gaps = [g for r in good for g in r.gaps]
    tokens = sum(r.tokens for r in good)
    errors = [r.error for r in results if not r.ok]
    return {
        "url": args.url,
        "concurrency": args.concurrency,
        "requests": len(results),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "duration_s": round(duration, 3),
        "requests_per_s": round(len(good) / duration, 3),
        "output_tokens": tokens,
        "output_tokens_per_s": round(tokens / duration, 2),
        "ttft_ms": {"p50": ms(percentile(ttfts, 50)), "p99": ms(percentile(ttfts, 99))},
        "itl_ms": {"p50": ms(percentile(gaps, 50)), "p99": ms(percentile(gaps, 99))},
        "tokens_per_request": statistics.mean(r.tokens for r in good) if good else 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--chat", action="store_true", help="use /v1/chat/completions (default: /v1/completions)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt template; {i} is the request number")
    parser.add_argument("--warmup", type=int, default=1, help="rounds of short concurrent requests before measuring")
    parser.add_argument(
        "--warmup-prompt", default=None, help="prompt template of the warm-up requests (default: --prompt)"
    )
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--sampling",
        type=json.loads,
        default={},
        help='JSON object merged into every request, e.g. \'{"temperature": 0.8, "seed": 1, "dry_multiplier": 0.8}\'',
    )
    args = parser.parse_args()
    report = asyncio.run(run(args))
    print(json.dumps(report))
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
