"""Soak test: mixed traffic in every dialect for N minutes, watching the gateway's and the engines' memory.

    python benchmarks/soak.py --minutes 10                       # starts its own `somner serve` (default model)
    python benchmarks/soak.py --minutes 10 --url URL --key KEY --pid GATEWAY_PID --model A --model B

The traffic, at a fixed concurrency: streamed OpenAI, Ollama and Anthropic chats, Kobold generations, streams
the client cancels after the first chunk, bad requests (broken JSON, wrong types, unknown models; each must be a
4xx), and model swaps (with two models and `max_loaded: 1`, one request every `--swap-every` seconds asks for the
other model).
Without --url the script starts a server of its own in a temporary directory, serving the default model under
two names with `max_loaded: 1`, so that swaps really unload and load.

Every minute it prints one row: requests, errors (transport failures, streams ended by an error event, any status
other than 200 for a good request or 4xx for a bad one; listed by kind and status under the row), latency
percentiles of the minute's generations (whole requests), the resident memory (RSS) of the gateway and of
each engine process (the gateway's children), and their open file descriptors. At the end: the idle gateway's
RSS (before traffic, once the model is loaded), and the gateway's RSS growth from the end of the warm-up minute
to the end (targets: < 5 % over 10 minutes, idle <= 120 MB). `--json FILE` keeps every row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

KEY = "sk-somner-soak-admin-key-00000000000000000000000000"
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- processes ------------------------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` in MB (0 when it is gone)."""
    try:
        resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return resident * PAGE / 1e6


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def engines_of(gateway: int) -> dict[int, str]:
    """The gateway's engine processes: pid -> the model id on their command line."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])
            if parent != gateway:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if b"worker" in argv:
            model = argv[argv.index(b"--id") + 1].decode() if b"--id" in argv else "?"
            found[int(entry.name)] = model
    return found


# -- traffic --------------------------------------------------------------------------------------------------


@dataclass
class Minute:
    minute: int
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # kind and status of each error


def _chat(model: str, i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{i}. Tell me about the sea."}]


def _streams(model: str, i: int, tokens: int) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (
            "openai",
            "/v1/chat/completions",
            {"model": model, "messages": _chat(model, i), "max_tokens": tokens, "stream": True},
        ),
        ("ollama", "/api/chat", {"model": model, "messages": _chat(model, i), "options": {"num_predict": tokens}}),
        (
            "anthropic",
            "/v1/messages",
            {"model": model, "messages": _chat(model, i), "max_tokens": tokens, "stream": True},
        ),
        ("kobold", "/api/v1/generate", {"prompt": f"{i}. Once upon a time", "max_length": tokens}),
    ]


_BAD: list[tuple[str, bytes]] = [
    ("/v1/chat/completions", b'{"model": "x", "messages": ['),  # truncated JSON
    ("/v1/chat/completions", b'{"model": 7, "messages": "no"}'),  # wrong types
    ("/api/chat", b'{"model": "no-such-model", "messages": []}'),  # unknown model
    ("/v1/messages", b'{"max_tokens": -5}'),  # missing and out-of-range fields
    ("/v1/completions", b"\xff\xfe not utf-8"),
]


class Traffic:
    def __init__(self, client: httpx.AsyncClient, models: list[str], tokens: int, seed: int, swap_every: float) -> None:
        self.client, self.models, self.tokens = client, models, tokens
        self.rng = random.Random(seed)
        self.count = 0
        self.started = time.monotonic()
        self.swap_every = swap_every
        self.last_swap = self.started
        self.minutes: dict[int, Minute] = {}

    def _minute(self) -> Minute:
        index = int((time.monotonic() - self.started) // 60)
        return self.minutes.setdefault(index, Minute(index + 1))

    async def one(self) -> None:
        self.count += 1
        i = self.count
        roll = self.rng.random()
        model = self.models[0]
        if len(self.models) > 1 and time.monotonic() - self.last_swap >= self.swap_every:
            model = self.models[1]  # a swap: the other model (unloads the first one, which the next request reloads)
            self.last_swap = time.monotonic()
            roll = 1.0  # (a generation)
        began = time.monotonic()
        kind, status = "?", "?"
        try:
            if roll < 0.15:
                kind = "bad input"
                status = await self._bad()
                ok = status.startswith("4")
            elif roll < 0.25:
                kind = "cancel"
                status = await self._cancel(model, i)
                ok = status == "200"
            else:
                choices = _streams(model, i, self.tokens)
                kind, path, body = self.rng.choice(choices if model == self.models[0] else choices[:3])
                if model != self.models[0]:
                    kind = f"swap ({kind})"  # (Kobold names no model: the three others do)
                status = await self._complete(path, body)
                ok = status == "200"
        except httpx.HTTPError as exc:
            status, ok = type(exc).__name__, False
        minute = self._minute()
        minute.requests += 1
        minute.kinds[kind] += 1
        if not ok:
            minute.errors += 1
            minute.failures[f"{kind}: {status}"] += 1
        if ok and kind not in ("cancel", "bad input"):
            minute.latencies.append(time.monotonic() - began)

    async def _complete(self, path: str, body: dict[str, Any]) -> str:
        """The status, or `error event` when a stream that began with 200 ended with its dialect's error."""
        tail = b""
        async with self.client.stream("POST", path, json=body) as reply:
            async for chunk in reply.aiter_bytes():
                tail = (tail + chunk)[-600:]
        if reply.status_code == 200 and b'"error"' in tail:
            return "error event"
        return str(reply.status_code)

    async def _cancel(self, model: str, i: int) -> str:
        _, path, body = self.rng.choice(_streams(model, i, 200)[:3])
        async with self.client.stream("POST", path, json=body) as reply:
            async for _ in reply.aiter_bytes():
                break  # the client goes away after the first chunk
        return str(reply.status_code)

    async def _bad(self) -> str:
        path, content = self.rng.choice(_BAD)
        reply = await self.client.post(path, content=content, headers={"content-type": "application/json"})
        return str(reply.status_code)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


# -- a server of our own ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(base: Path) -> tuple[subprocess.Popen[bytes], str, list[str]]:
    from somner.models.default_model import ensure_default_model

    models = base / "data" / "models"
    models.mkdir(parents=True)
    first = ensure_default_model(models)
    os.link(first, models / "soak-b.gguf")
    config = base / "config.yaml"
    engine = {"ctx": 2048, "parallel": 4, "threads": 2}
    # (`model`: the default, which Kobold's API, naming no model, is served by)
    config.write_text(json.dumps({"model": first.stem, "max_loaded": 1, "engine": engine}))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOMNER_")} | {"SOMNER_ADMIN_KEY": KEY}
    command = [sys.executable, "-m", "somner", "serve", "--config", str(config), "--data-dir", str(base / "data")]
    log = (base / "serve.log").open("wb")
    process = subprocess.Popen([*command, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"somner serve did not start; see {base / 'serve.log'}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return process, url, [first.stem, "soak-b"]
        except httpx.HTTPError:
            pass
        time.sleep(0.2)


# -- the run -----------------------------------------------------------------------------------------------------


def snapshot(gateway: int) -> dict[str, Any]:
    engines = engines_of(gateway)
    return {
        "gateway_rss_mb": round(rss_mb(gateway), 1),
        "gateway_fds": open_fds(gateway),
        "engines": {f"{model} ({pid})": round(rss_mb(pid), 1) for pid, model in sorted(engines.items())},
        "engine_fds": sum(open_fds(pid) for pid in engines),
    }


async def soak(url: str, key: str, gateway: int, models: list[str], args: argparse.Namespace) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=args.concurrency * 2)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300, limits=limits) as client:
        warm = await client.post(
            "/v1/chat/completions", json={"model": models[0], "messages": _chat("", 0), "max_tokens": 2}
        )
        warm.raise_for_status()
        await asyncio.sleep(2)
        idle = snapshot(gateway)
        traffic = Traffic(client, models, args.tokens, args.seed, args.swap_every)
        end = time.monotonic() + args.minutes * 60
        rows: list[dict[str, Any]] = []

        async def loop() -> None:
            while time.monotonic() < end:
                await traffic.one()

        async def watch() -> None:
            for index in range(args.minutes):
                await asyncio.sleep(max(0.0, traffic.started + (index + 1) * 60 - time.monotonic()))
                minute = traffic.minutes.get(index, Minute(index + 1))
                row = {
                    "minute": index + 1,
                    "requests": minute.requests,
                    "errors": minute.errors,
                    "p50_ms": round(percentile(minute.latencies, 50) * 1000),
                    "p95_ms": round(percentile(minute.latencies, 95) * 1000),
                    "p99_ms": round(percentile(minute.latencies, 99) * 1000),
                    **snapshot(gateway),
                    "kinds": dict(minute.kinds),
                    "failures": dict(minute.failures),
                }
                rows.append(row)
                print(table_row(row), flush=True)
                if minute.failures:
                    print(f"  errors in minute {index + 1}: {dict(minute.failures)}", flush=True)

        print(TABLE_HEAD, flush=True)
        await asyncio.gather(watch(), *(loop() for _ in range(args.concurrency)))
        await asyncio.sleep(5)
        after = snapshot(gateway)
    base = rows[0]["gateway_rss_mb"] if rows else idle["gateway_rss_mb"]
    last = rows[-1]["gateway_rss_mb"] if rows else base
    return {
        "minutes": args.minutes,
        "concurrency": args.concurrency,
        "idle_before": idle,
        "idle_after": after,
        "rows": rows,
        "gateway_growth_after_warmup_pct": round((last - base) / base * 100, 2) if base else None,
    }


TABLE_HEAD = (
    "| minute | requests | errors | p50 ms | p95 ms | p99 ms | gateway RSS MB | gateway fds | engines RSS MB "
    "| engine fds |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def table_row(row: dict[str, Any]) -> str:
    engines = ", ".join(f"{name}: {mb}" for name, mb in row["engines"].items()) or "-"
    cells = [row["minute"], row["requests"], row["errors"], row["p50_ms"], row["p95_ms"], row["p99_ms"]]
    cells += [row["gateway_rss_mb"], row["gateway_fds"], engines, row["engine_fds"]]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=16, help="Tokens per generation.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--swap-every", type=float, default=20.0, help="Seconds between model swaps (2 models).")
    parser.add_argument("--url", help="A running server (else the script starts one).")
    parser.add_argument("--key", default=KEY, help="An admin key of --url.")
    parser.add_argument("--pid", type=int, help="The gateway's pid (with --url).")
    parser.add_argument("--model", action="append", default=[], help="Models (with --url); a second one swaps.")
    parser.add_argument("--json", type=Path, help="Write every row and the summary here.")
    parser.add_argument("--keep", action="store_true", help="Keep the own server's directory (its logs).")
    args = parser.parse_args()
    base: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    if args.url:
        if args.pid is None or not args.model:
            parser.error("--url needs --pid and --model")
        url, pid, models = args.url, args.pid, args.model
    else:
        base = Path(tempfile.mkdtemp(prefix="somner-soak-"))
        process, url, models = start_server(base)
        pid = process.pid
    try:
        result = asyncio.run(soak(url, args.key, pid, models, args))
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
        if base is not None and not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        elif base is not None:
            print(f"the server's directory (logs in data/logs): {base}")
    print(
        f"\nidle gateway RSS: {result['idle_before']['gateway_rss_mb']} MB before traffic, "
        f"{result['idle_after']['gateway_rss_mb']} MB after"
    )
    print(f"gateway RSS growth after the warm-up minute: {result['gateway_growth_after_warmup_pct']} %")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
