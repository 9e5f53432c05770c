"""Somner against an earlier Somner: the same load on this checkout and on another commit, side by side in one run.

    .venv/bin/python benchmarks/somner_ab.py REV [--concurrency 1,4,8] [--rounds 3] [--max-tokens 128] [--slots 8]

Checks REV out into a temporary git worktree, starts `somner serve` from that tree's sources and from this
checkout's (the same virtual environment, GGUF, threads, slots and context), runs `loadgen.py` against both,
alternating which goes first, and prints medians and this/REV ratios: what a change did to plain throughput.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import vs_llama_server as vs  # noqa: E402


def start(src: Path, work: Path, name: str, model: Path, args: argparse.Namespace) -> tuple[str, Any]:
    data = work / name
    (data / "models").mkdir(parents=True)
    os.link(model, data / "models" / model.name)
    config = work / f"{name}.yaml"
    config.write_text(
        f"engine:\n  threads: {args.threads}\n  parallel: {args.slots}\n  ctx: {args.ctx}\nmodel: {model.stem}\n"
    )
    port = vs.free_port()
    command = [sys.executable, "-m", "somner", "serve", "--config", str(config), "--data-dir", str(data)]
    env = {**os.environ, "PYTHONPATH": str(src), "SOMNER_ADMIN_KEY": vs.ADMIN_KEY}
    log = (work / f"{name}.log").open("wb")
    process = subprocess.Popen([*command, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env)
    return f"http://127.0.0.1:{port}", process


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", help="the commit to compare with (anything git rev-parse takes)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--ctx", type=int, default=1024)
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    cache = Path(os.environ.get("SOMNER_BENCH_CACHE", Path.home() / ".cache" / "somner-bench"))
    model = vs.default_model(cache)
    work = Path(tempfile.mkdtemp(prefix="somner-ab-"))
    tree = work / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.rev], check=True)
    labels = {"this": ROOT / "src", args.rev: tree / "src"}
    servers = {name: start(src, work, name.replace("/", "_"), model, args) for name, src in labels.items()}
    reports: dict[str, dict[int, list[dict[str, Any]]]] = {name: {c: [] for c in levels} for name in servers}
    try:
        for url, process in servers.values():
            vs.wait_ready(url, process, "/ready")
            vs.loadgen(url, model.stem, 1, 2, 16, False, vs.ADMIN_KEY)  # (warm up)
        for index in range(args.rounds):
            for c in levels:
                order = list(servers.items())
                if (index + c) % 2:
                    order.reverse()
                for name, (url, _) in order:
                    report = vs.loadgen(url, model.stem, c, max(4, 2 * c), args.max_tokens, False, vs.ADMIN_KEY)
                    reports[name][c].append(report)
                    print(
                        f"round {index + 1} c={c:<3} {name:<10} {report['output_tokens_per_s']} tok/s", file=sys.stderr
                    )
    finally:
        for _, process in servers.values():
            vs.stop(process)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(work, ignore_errors=True)

    def med(name: str, c: int, key: str, sub: str | None = None) -> float | None:
        return vs.median([r[key][sub] if sub else r[key] for r in reports[name][c]])

    print(f"\nthis checkout vs {args.rev}: {args.threads} threads, {args.slots} slots, medians of {args.rounds}\n")
    rev = args.rev
    print(f"| c | {rev} tok/s | this tok/s | ratio | TTFT p50 ms ({rev} / this) | ITL p99 ms ({rev} / this) |")
    print("|---|---|---|---|---|---|")
    for c in levels:
        before, after = med(args.rev, c, "output_tokens_per_s"), med("this", c, "output_tokens_per_s")
        print(
            f"| {c} | {vs.fmt(before)} | {vs.fmt(after)} | {vs.ratio(after, before)} | "
            f"{vs.fmt(med(args.rev, c, 'ttft_ms', 'p50'))} / {vs.fmt(med('this', c, 'ttft_ms', 'p50'))} | "
            f"{vs.fmt(med(args.rev, c, 'itl_ms', 'p99'))} / {vs.fmt(med('this', c, 'itl_ms', 'p99'))} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
