"""Cold start: from starting the server to the first streamed token, Somner against llama-server.

    benchmarks/cold_start.sh [--rounds 5] [--threads 2] [--slots 8] [--ctx 1024]

Each round starts each server (alternating which goes first) on the default model as a user would after install
(`somner serve --model M`, `llama-server -m M`), sends one streamed completion as soon as the server can take it
(Somner: once its port accepts connections, the request waits for the model; llama-server: once `/health` says
the model is loaded, since it answers 503 before), and measures the time from the start to the first token, then
stops the server. Somner's data directory is made once (its first start, not measured, creates the usage
database); every measured start is a restart, with the page cache warm, as after `make run`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import vs_llama_server as vs  # noqa: E402


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.05)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def first_token(url: str, model: str, key: str | None, deadline: float) -> float:
    """Stream one completion; the moment its first token arrives (perf_counter)."""
    body = {"model": model, "prompt": "Once upon a time", "max_tokens": 4, "stream": True, "temperature": 0}
    headers = {"authorization": f"Bearer {key}"} if key else {}
    with httpx.stream("POST", url + "/v1/completions", json=body, headers=headers, timeout=120) as response:
        if response.status_code != 200:
            raise RuntimeError(f"status {response.status_code}: {response.read()[:200]!r}")
        for line in response.iter_lines():
            if line.startswith("data: {") and '"text":"' in line.replace(" ", "") and '"text":""' not in line:
                return time.perf_counter()
            if time.perf_counter() > deadline:
                break
    raise RuntimeError("no token")


def start_somner(args: argparse.Namespace, work: Path, model: Path, port: int) -> subprocess.Popen[bytes]:
    command = [
        *(sys.executable, "-m", "somner", "serve", "--model", model.stem),
        *("--data-dir", str(work / "data"), "--port", str(port)),
    ]
    env = {
        **os.environ,
        "SOMNER_ADMIN_KEY": vs.ADMIN_KEY,
        "SOMNER_ENGINE__THREADS": str(args.threads),
        "SOMNER_ENGINE__PARALLEL": str(args.slots),
        "SOMNER_ENGINE__CTX": str(args.ctx),
    }
    return subprocess.Popen(command, stdout=(work / "somner.log").open("ab"), stderr=subprocess.STDOUT, env=env)


def start_llama(args: argparse.Namespace, work: Path, model: Path, port: int) -> subprocess.Popen[bytes]:
    command = [
        args.llama_server,
        *("-m", str(model), "--host", "127.0.0.1", "--port", str(port)),
        *("-t", str(args.threads), "-tb", str(args.threads), "--parallel", str(args.slots)),
        *("-c", str(args.ctx * args.slots), "--no-webui"),
    ]
    return subprocess.Popen(command, stdout=(work / "llama.log").open("ab"), stderr=subprocess.STDOUT)


def measure(args: argparse.Namespace, name: str, work: Path, model: Path) -> float:
    port = vs.free_port()
    url = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    deadline = start + 120
    if name == "somner":
        process = start_somner(args, work, model, port)
        key: str | None = vs.ADMIN_KEY
        while not accepts(port):
            if process.poll() is not None or time.perf_counter() > deadline:
                raise SystemExit(f"somner did not start (see {work / 'somner.log'})")
            time.sleep(0.005)
    else:
        process = start_llama(args, work, model, port)
        key = None
        while True:
            if process.poll() is not None or time.perf_counter() > deadline:
                raise SystemExit(f"llama-server did not start (see {work / 'llama.log'})")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.005)
    try:
        return first_token(url, model.stem, key, deadline) - start
    finally:
        vs.stop(process)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-server", required=True)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--ctx", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cache = Path(os.environ.get("SOMNER_BENCH_CACHE", Path.home() / ".cache" / "somner-bench"))
    model = args.model or vs.default_model(cache)
    # As `make run` leaves it: Somner's bytecode compiled (this environment may say PYTHONDONTWRITEBYTECODE).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(HERE.parent / "src" / "somner")], check=True)
    work = Path(tempfile.mkdtemp(prefix="somner-cold-"))
    (work / "data" / "models").mkdir(parents=True)
    try:
        os.link(model, work / "data" / "models" / model.name)
    except OSError:
        shutil.copy(model, work / "data" / "models" / model.name)
    measure(args, "somner", work, model)  # (the first start: creates the data directory's database)
    times: dict[str, list[float]] = {"llama-server": [], "somner": []}
    for index in range(args.rounds):
        order = ["llama-server", "somner"] if index % 2 == 0 else ["somner", "llama-server"]
        for name in order:
            took = measure(args, name, work, model)
            times[name].append(took)
            print(f"round {index + 1} {name:<12} {took * 1000:.0f} ms to the first token", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    llama, somner = vs.median(list(times["llama-server"])), vs.median(list(times["somner"]))
    shape = f"{args.threads} threads, {args.slots} slots x {args.ctx} ctx"
    print(f"\nmodel {model.name}, {shape}, medians of {args.rounds}\n")
    print("| | llama-server | Somner | ratio | target |")
    print("|---|---|---|---|---|")
    print(
        f"| start to first token ms | {vs.fmt(llama * 1000 if llama else None, 0)} | "
        f"{vs.fmt(somner * 1000 if somner else None, 0)} | {vs.ratio(somner, llama)} | Somner <= 1500 ms |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
