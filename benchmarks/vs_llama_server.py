"""Somner against llama.cpp's llama-server on the same GGUF, threads and slots, side by side in one run.

Started by `benchmarks/vs_llama_server.sh`, which builds llama-server from the llama.cpp sources that the installed
llama-cpp-python vendors. For each round and each concurrency, both servers get the same load from
`benchmarks/loadgen.py` (alternating which goes first); the table shows medians over rounds and Somner/llama-server
ratios. Somner is measured through its gateway, as users reach it.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent


ADMIN_KEY = "sk-somner-bench-" + secrets.token_urlsafe(32)
KEYS: dict[str, str] = {}  # the API key to send, by server URL


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], path: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode} before it was ready ({url})")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not become ready")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def default_model(cache: Path) -> Path:
    from somner.models.default_model import ensure_default_model

    return ensure_default_model(cache / "models")


def loadgen(
    url: str,
    model: str,
    concurrency: int,
    requests: int,
    max_tokens: int,
    chat: bool,
    key: str | None = None,
    sampling: dict[str, Any] | None = None,
    prompt: str | None = None,
) -> dict[str, Any]:
    command = [
        sys.executable,
        str(HERE / "loadgen.py"),
        url,
        "--model",
        model,
        "--concurrency",
        str(concurrency),
        "--requests",
        str(requests),
        "--max-tokens",
        str(max_tokens),
    ]
    if chat:
        command.append("--chat")
    if key is not None:
        command += ["--api-key", key]
    if sampling:
        command += ["--sampling", json.dumps(sampling)]
    if prompt is not None:  # (warm up with other text: the measured requests meet their start cold)
        command += ["--prompt", prompt, "--warmup-prompt", "{i}. Hello"]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if not out.stdout.strip():
        raise SystemExit(f"loadgen failed: {out.stderr}")
    report: dict[str, Any] = json.loads(out.stdout)
    if report["errors"]:
        print(f"  ! {url} c={concurrency}: {report['errors']} errors: {report['first_error']}", file=sys.stderr)
    return report


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


Reports = dict[str, dict[int, list[dict[str, Any]]]]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--llama-server", required=True, help="path to the llama-server binary")
    parser.add_argument("--model", type=Path, default=None, help="GGUF file (default: Somner's default model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slots", type=int, default=8, help="parallel sequences in both servers")
    parser.add_argument("--ctx", type=int, default=1024, help="context per slot")
    parser.add_argument("--concurrency", default="1,4,8,16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--chat", action="store_true")
    parser.add_argument("--gpu-layers", type=int, default=0)
    parser.add_argument(
        "--somner-repack",
        action="store_true",
        help="run Somner with engine.cpu_repack: true (llama-server repacks by default; Somner does not, see README)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every raw report here")
    parser.add_argument("--waves", type=int, default=2, help="requests per concurrent client in a run (at least 4)")
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="the scaling curve: restart both servers for each concurrency with slots = concurrency",
    )
    parser.add_argument("--plot", type=Path, default=None, help="with --scaling: write the curve here (SVG)")
    parser.add_argument(
        "--shared-prefix",
        type=int,
        default=0,
        help="start every prompt with the same system text of about this many tokens (many users, one system "
        "prompt); each request's question stays distinct",
    )
    parser.add_argument(
        "--swa-full",
        action="store_true",
        help="full-size sliding-window caches in both servers (llama-server --swa-full, Somner engine.swa_full), "
        "so that shared prefixes longer than the window can be reused",
    )
    parser.add_argument(
        "--sampling",
        type=json.loads,
        default={},
        help="JSON object of sampler fields sent to both servers (e.g. DRY and XTC, which both have)",
    )
    parser.add_argument(
        "--somner-sampling",
        type=json.loads,
        default={},
        help="JSON object of sampler fields sent to Somner only (e.g. banned_strings, which llama-server lacks)",
    )
    return parser.parse_args()


def start_servers(args: argparse.Namespace, model: Path, work: Path) -> dict[str, subprocess.Popen[bytes]]:
    (work / "data" / "models").mkdir(parents=True)
    try:
        os.link(model, work / "data" / "models" / model.name)
    except OSError:
        shutil.copy(model, work / "data" / "models" / model.name)
    config = work / "somner.yaml"
    config.write_text(
        f"engine:\n  threads: {args.threads}\n  parallel: {args.slots}\n  ctx: {args.ctx}\n"
        f"  gpu_layers: {args.gpu_layers}\n  cpu_repack: {str(args.somner_repack).lower()}\n"
        f"  swa_full: {str(args.swa_full).lower()}\nmodel: {model.stem}\n"
    )
    args.llama_port, args.somner_port = free_port(), free_port()
    llama = [
        args.llama_server,
        *("-m", str(model), "--host", "127.0.0.1", "--port", str(args.llama_port)),
        *("-t", str(args.threads), "-tb", str(args.threads), "--parallel", str(args.slots)),
        *("-c", str(args.ctx * args.slots), "-ngl", str(args.gpu_layers), "--no-webui"),
        *(["--swa-full"] if args.swa_full else []),
    ]
    somner = [
        *(sys.executable, "-m", "somner", "serve", "--config", str(config)),
        *("--data-dir", str(work / "data"), "--port", str(args.somner_port)),
    ]
    return {
        "llama-server": subprocess.Popen(llama, stdout=(work / "llama.log").open("wb"), stderr=subprocess.STDOUT),
        "somner": subprocess.Popen(
            somner,
            stdout=(work / "somner.log").open("wb"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "SOMNER_ADMIN_KEY": ADMIN_KEY},  # auth stays on: what users run
        ),
    }


def plain_prompt(salt: str) -> str:
    """loadgen's prompt template, made distinct per run as well as per request (its {i} comes first, so no two
    prompts share more than a few tokens): otherwise every round would repeat the first round's prompts, and a
    server that keeps evicted slots' caches in memory (llama-server's prompt cache, `--cache-ram`, 8 GiB by
    default) would answer the later rounds from it."""
    return "{i} (" + salt + "). Write a long story about a robot who learns to paint, with many details."


def shared_prompt(words: int, salt: str) -> str | None:
    """A prompt template (loadgen's {i}: the request number) that starts with the same long system text, new for
    each `salt`: the first requests of a run arrive together and find it in no cache, the later ones do."""
    if words <= 0:
        return None
    rules = " ".join(
        f"Rule {n}: stay polite, answer in full sentences and cite the manual section." for n in range(1, 10**4)
    )
    system = " ".join(rules.split()[: int(words * 0.75)])  # (about 4 tokens per 3 words)
    return (
        f"[{salt}] You are the support assistant of a hardware shop. {system}\n\n"
        "Customer {i} asks: which cable do I need?"
    )


def run_rounds(args: argparse.Namespace, urls: dict[str, str], model_id: str, levels: list[int]) -> Reports:
    reports: Reports = {name: {c: [] for c in levels} for name in urls}
    for url in urls.values():  # warm both (first-request allocations)
        loadgen(url, model_id, 1, 2, 16, args.chat, KEYS.get(url))
    for round_index in range(args.rounds):
        for c in levels:
            order = list(urls.items())
            if (round_index + c) % 2:
                order.reverse()  # alternate which server goes first
            for name, url in order:
                sampling = {**args.sampling, **(args.somner_sampling if name == "somner" else {})}
                salt = f"round {round_index} c={c}"  # (each server its own cache)
                prompt = shared_prompt(args.shared_prefix, salt) if args.shared_prefix > 0 else plain_prompt(salt)
                count = max(4, args.waves * c)
                report = loadgen(url, model_id, c, count, args.max_tokens, args.chat, KEYS.get(url), sampling, prompt)
                reports[name][c].append(report)
                print(
                    f"round {round_index + 1} c={c:<3} {name:<12} {report['output_tokens_per_s']:>8} tok/s  "
                    f"ttft p50 {report['ttft_ms']['p50']} ms  itl p99 {report['itl_ms']['p99']} ms",
                    file=sys.stderr,
                )
    return reports


def print_table(args: argparse.Namespace, model: Path, reports: Reports, levels: list[int]) -> None:
    def med(name: str, c: int, key: str, sub: str | None = None) -> float | None:
        return median([r[key][sub] if sub else r[key] for r in reports[name][c]])

    print(
        f"\nmodel {model.name}, {args.threads} threads, {args.slots} slots x {args.ctx} ctx, {args.max_tokens} output "
        f"tokens, {'chat' if args.chat else 'completions'}, Somner cpu_repack {args.somner_repack}, "
        f"medians of {args.rounds} rounds"
        + (f", sampling {json.dumps(args.sampling)}" if args.sampling else "")
        + (f", Somner also {json.dumps(args.somner_sampling)}" if args.somner_sampling else "")
        + "\n"
    )
    print(
        "| c | llama-server tok/s | Somner tok/s | ratio | TTFT p50 ms (llama / Somner) | ratio "
        "| ITL p99 ms (llama / Somner) | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for c in levels:
        lt, st = med("llama-server", c, "output_tokens_per_s"), med("somner", c, "output_tokens_per_s")
        lf, sf = med("llama-server", c, "ttft_ms", "p50"), med("somner", c, "ttft_ms", "p50")
        li, si = med("llama-server", c, "itl_ms", "p99"), med("somner", c, "itl_ms", "p99")
        print(
            f"| {c} | {fmt(lt)} | {fmt(st)} | {ratio(st, lt)} | {fmt(lf)} / {fmt(sf)} | {ratio(sf, lf)} | "
            f"{fmt(li)} / {fmt(si)} | {ratio(si, li)} |"
        )


def measure(args: argparse.Namespace, model: Path, levels: list[int]) -> Reports:
    """Start both servers, run the rounds at `levels`, stop them."""
    work = Path(tempfile.mkdtemp(prefix="somner-bench-"))
    processes = start_servers(args, model, work)
    urls = {"llama-server": f"http://127.0.0.1:{args.llama_port}", "somner": f"http://127.0.0.1:{args.somner_port}"}
    try:
        wait_ready(urls["llama-server"], processes["llama-server"], "/health")
        wait_ready(urls["somner"], processes["somner"], "/ready")
        KEYS[urls["somner"]] = ADMIN_KEY
        return run_rounds(args, urls, model.stem, levels)
    finally:
        for process in processes.values():
            stop(process)
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    args = parse_args()
    cache = Path(os.environ.get("SOMNER_BENCH_CACHE", Path.home() / ".cache" / "somner-bench"))
    model = args.model or default_model(cache)
    levels = [int(c) for c in args.concurrency.split(",")]
    if args.scaling:  # (one pair of servers per level, each with as many slots as clients)
        reports: Reports = {"llama-server": {}, "somner": {}}
        for c in levels:
            args.slots = c
            for name, by_level in measure(args, model, [c]).items():
                reports[name].update(by_level)
        args.slots = "c"
    else:
        reports = measure(args, model, levels)
    if args.json:
        args.json.write_text(json.dumps(reports, indent=1))
    print_table(args, model, reports, levels)
    if args.plot is not None:
        import scaling_plot

        args.plot.write_text(scaling_plot.svg(reports, levels, f"{model.name}, {args.threads} threads, slots = c"))
        print(f"\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
