"""Mixed load, Somner against llama-server side by side: streams generating while long prompts keep arriving.

    benchmarks/mixed_load.sh [--streams 4] [--long-prompts 4] [--every 4.0] [--prompt-tokens 2000] [--rounds 3]

Both servers run the same GGUF with the same threads, slots and context (started as `vs_llama_server.py` starts
them). In each round, for each server (llama-server first, then Somner),
`--streams` clients stream requests of `--max-tokens` tokens, one after another; from `--every` seconds on, one
long prompt (about `--prompt-tokens` tokens, distinct from every other, so no cache helps) arrives every `--every`
seconds, `--long-prompts` in all, each asking for a few tokens; the streams stop once the last long prompt is
answered. The same arrival pattern hits both servers. What counts for the running streams is how smooth they stay
while the long prompts are read: their inter-token latency (p50, p99, worst), and the total output tokens/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402
import vs_llama_server as vs  # noqa: E402


def long_prompt(i: int, tokens: int) -> str:
    """About `tokens` tokens of text that shares no start with any other prompt."""
    parts = [f"Ledger {i}-{os.urandom(4).hex()}."]
    n = 0
    while len(parts) * 15 < tokens:  # (each line is about 15 tokens in Gemma's vocabulary)
        parts.append(f"Entry {n}: crate {n * 37 % 101} holds {n * 13 % 17} lamps.")
        n += 1
    return " ".join(parts) + "\nSummary:"


def request(args: argparse.Namespace, prompt: str, max_tokens: int, key: str | None) -> argparse.Namespace:
    return argparse.Namespace(
        prompt=prompt.replace("{", "{{").replace("}", "}}"),
        model=args.model_id,
        max_tokens=max_tokens,
        chat=False,
        sampling={},
        api_key=key,
    )


async def one_round(args: argparse.Namespace, url: str, key: str | None) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600, headers=headers) as client:
        # Warm connections for every client, as loadgen does.
        warm = request(args, "Hello", 2, key)
        await asyncio.gather(*(loadgen.one_request(client, warm, 0) for _ in range(args.streams + args.long_prompts)))
        longs_spec = [request(args, long_prompt(i, args.prompt_tokens), 8, key) for i in range(args.long_prompts)]
        # Stream prompts new in every round too (see vs_llama_server.plain_prompt): no server answers from a cache.
        run = os.urandom(3).hex()
        arrivals_over = asyncio.Event()

        async def streaming(i: int) -> list[loadgen.Result]:
            """One client's streams, one after another, until the last long prompt is answered."""
            done: list[loadgen.Result] = []
            while not arrivals_over.is_set():
                story = f"{i}.{len(done)}.{run} Write a long story about a lighthouse keeper."
                spec = request(args, story, args.max_tokens, key)
                done.append(await loadgen.one_request(client, spec, 0))
            return done

        async def arriving(k: int) -> loadgen.Result:
            await asyncio.sleep(args.every * (k + 1))
            return await loadgen.one_request(client, longs_spec[k], 0)

        async def arrivals() -> list[loadgen.Result]:
            try:
                return list(await asyncio.gather(*(arriving(k) for k in range(args.long_prompts))))
            finally:
                arrivals_over.set()

        start = time.perf_counter()
        per_client, long_results = await asyncio.gather(
            asyncio.gather(*(streaming(i) for i in range(args.streams))), arrivals()
        )
        duration = time.perf_counter() - start
        stream_results = [r for results in per_client for r in results]
    failed = [r.error for r in [*stream_results, *long_results] if not r.ok]
    if failed:  # (a measurement with failed requests means nothing: stop)
        raise SystemExit(f"{url}: {len(failed)} request(s) failed: {failed[0]}")
    gaps = [g for r in stream_results if r.ok for g in r.gaps]
    ttfts = [r.ttft for r in long_results if r.ok and r.ttft is not None]
    tokens = sum(r.tokens for r in [*stream_results, *long_results] if r.ok)
    return {
        "errors": len(failed),
        "itl_p50_ms": loadgen.ms(loadgen.percentile(gaps, 50)),
        "itl_p99_ms": loadgen.ms(loadgen.percentile(gaps, 99)),
        "itl_max_ms": loadgen.ms(max(gaps) if gaps else None),
        "long_ttft_p50_ms": loadgen.ms(loadgen.percentile(ttfts, 50)),
        "output_tokens_per_s": round(tokens / duration, 2),
        "duration_s": round(duration, 2),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-server", required=True, help="path to the llama-server binary")
    parser.add_argument("--model", type=Path, default=None, help="GGUF file (default: Somner's default model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--ctx", type=int, default=2560, help="context per slot (a long prompt must fit)")
    parser.add_argument("--streams", type=int, default=4, help="clients streaming one request after another")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens each streamed request generates")
    parser.add_argument("--long-prompts", type=int, default=4)
    parser.add_argument("--every", type=float, default=4.0, help="seconds between long prompts")
    parser.add_argument("--prompt-tokens", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--somner-repack", action="store_true", help="Somner with engine.cpu_repack: true (llama-server repacks)"
    )
    parser.add_argument(
        "--swa-full",
        action="store_true",
        help="full-size sliding-window caches in both servers (llama-server --swa-full, Somner engine.swa_full)",
    )
    args = parser.parse_args()
    args.gpu_layers = 0  # (what vs_llama_server.start_servers reads)
    return args


def main() -> int:
    args = parse_args()
    cache = Path(os.environ.get("SOMNER_BENCH_CACHE", Path.home() / ".cache" / "somner-bench"))
    model = args.model or vs.default_model(cache)
    args.model_id = model.stem
    work = Path(tempfile.mkdtemp(prefix="somner-mixed-"))
    processes = vs.start_servers(args, model, work)
    urls = {"llama-server": f"http://127.0.0.1:{args.llama_port}", "somner": f"http://127.0.0.1:{args.somner_port}"}
    reports: dict[str, list[dict[str, Any]]] = {name: [] for name in urls}
    try:
        vs.wait_ready(urls["llama-server"], processes["llama-server"], "/health")
        vs.wait_ready(urls["somner"], processes["somner"], "/ready")
        keys = {"llama-server": None, "somner": vs.ADMIN_KEY}
        for index in range(args.rounds):
            # The same order every round (llama-server, then Somner): each server's run follows the other's.
            for name, url in urls.items():
                report = asyncio.run(one_round(args, url, keys[name]))
                reports[name].append(report)
                print(f"round {index + 1} {name:<12} {report}", file=sys.stderr)
    finally:
        for process in processes.values():
            vs.stop(process)
    shutil.rmtree(work, ignore_errors=True)

    def med(name: str, key: str) -> float | None:
        return vs.median([r[key] for r in reports[name]])

    print(
        f"\nmodel {model.name}, {args.threads} threads, {args.slots} slots x {args.ctx} ctx; {args.streams} streams of "
        f"{args.max_tokens} tokens, {args.long_prompts} prompts of ~{args.prompt_tokens} tokens every {args.every} s, "
        f"swa_full {args.swa_full}; "
        f"Somner cpu_repack {args.somner_repack}, medians of {args.rounds} rounds\n"
    )
    print("| | llama-server | Somner | ratio | target |")
    print("|---|---|---|---|---|")
    rows = [
        ("stream inter-token p50 ms", "itl_p50_ms", ""),
        ("stream inter-token p99 ms", "itl_p99_ms", "<= 0.5"),
        ("stream inter-token worst ms", "itl_max_ms", ""),
        ("long prompt TTFT p50 ms", "long_ttft_p50_ms", ""),
        ("output tok/s (all requests)", "output_tokens_per_s", ">= 1.0"),
    ]
    for label, key, target in rows:
        llama, somner = med("llama-server", key), med("somner", key)
        print(f"| {label} | {vs.fmt(llama)} | {vs.fmt(somner)} | {vs.ratio(somner, llama)} | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
