"""`somner worker-exl3` as a process on its own: its load progress, its HTTP surface, batching, a clean stop, and
the exit status 2 (with the gateway's one-line reason) when a model cannot load, including when the exllamav3
package or a CUDA GPU is missing. The generator is the CPU fake unless a test says otherwise."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.fakes.exl3_generator import write_folder
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
FAKE = {"SOMNER_EXL3_GENERATOR": "tests.fakes.exl3_generator:load", "PYTHONPATH": str(ROOT)}


def start(folder: Path, port: int, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    environment = {k: v for k, v in os.environ.items() if k != "SOMNER_EXL3_GENERATOR"}
    return subprocess.Popen(
        [sys.executable, "-m", "somner", "worker-exl3", "--model", str(folder), "--port", str(port), *args],
        env={**environment, **(FAKE if env is None else env)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_healthy(client: httpx.Client, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.stdout.read().decode() if process.stdout else "worker exited")
        try:
            if client.get("/health").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("worker did not become healthy")


def exit_of(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    output, _ = process.communicate(timeout=60)
    return process.returncode, output.decode()


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, subprocess.Popen[bytes]]]:
    folder = write_folder(tmp_path_factory.mktemp("exl3") / "fake-model", step_delay=0.005, load_steps=5)
    port = free_port()
    process = start(folder, port, "--parallel", "3", "--ctx", "1024", "--cache-type-k", "q6", "--cache-type-v", "q6")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        try:
            wait_healthy(client, process)
            yield client, process
        finally:
            process.send_signal(signal.SIGTERM)
            status, output = exit_of(process)
            assert status == 0, output
            for percent in (0, 20, 40, 60, 80, 100):
                assert f"somner worker: loading {percent}%\n" in output


def test_health_and_props_describe_the_model(worker: tuple[httpx.Client, subprocess.Popen[bytes]]) -> None:
    client, _ = worker
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert (health["engine"], health["id"], health["n_ctx"], health["parallel"]) == ("exllamav3", "fake-model", 1024, 3)
    assert (health["cache_type_k"], health["cache_size"]) == ("q6", 3072)
    props = client.get("/props").json()
    assert props["total_slots"] == 3
    assert props["default_generation_settings"] == {"n_ctx": 1024}
    assert "<|im_start|>" in props["chat_template"]
    assert client.get("/v1/models").json()["data"][0]["id"] == "fake-model"


def test_requests_sent_together_are_generated_together(worker: tuple[httpx.Client, subprocess.Popen[bytes]]) -> None:
    client, _ = worker
    before = client.get("/stats").json()["engine"]

    def ask(i: int) -> str:
        body = {"model": "fake-model", "messages": [{"role": "user", "content": f"say: {'ab' * (20 + i)}"}]}
        return str(client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"])

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(ask, range(3)))
    assert answers == ["ab" * (20 + i) for i in range(3)]
    after = client.get("/stats").json()["engine"]
    generated = after["generated_tokens"] - before["generated_tokens"]
    steps = after["steps"] - before["steps"]
    assert generated == sum(2 * (20 + i) + 1 for i in range(3))
    assert steps < generated * 0.6, (steps, generated)  # one step advanced several jobs


def test_apply_template_and_bad_bodies(worker: tuple[httpx.Client, subprocess.Popen[bytes]]) -> None:
    client, _ = worker
    body = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
    prompt = client.post("/apply-template", json=body).json()["prompt"]
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    bad = client.post("/detokenize", json={"tokens": [-3]})
    assert bad.status_code == 400 and "outside the vocabulary" in bad.json()["error"]["message"]
    grammar = client.post("/v1/chat/completions", json={**body, "grammar": "no rules here"})
    assert grammar.status_code == 400 and "grammar cannot be used" in grammar.json()["error"]["message"]


@pytest.mark.skipif(
    importlib.util.find_spec("exllamav3") is not None,
    reason="exllamav3 is installed: this checks the worker without it",
)
def test_without_the_exllamav3_package_the_worker_says_what_it_needs(tmp_path: Path) -> None:
    process = start(write_folder(tmp_path / "m"), free_port(), env={})
    status, output = exit_of(process)
    assert status == 2, output
    line = next(line for line in output.splitlines() if line.startswith("somner worker: cannot load model: "))
    assert line.startswith(
        "somner worker: cannot load model: the exllamav3 engine needs the somner[exl3] extra and a CUDA GPU ("
    ), line


def test_a_load_failure_exits_2_with_its_reason(tmp_path: Path) -> None:
    process = start(write_folder(tmp_path / "m", fail_load="CUDA out of memory (fake)"), free_port())
    status, output = exit_of(process)
    assert status == 2
    assert "somner worker: cannot load model: CUDA out of memory (fake)\n" in output


def test_a_folder_that_is_not_exl3_exits_2(tmp_path: Path) -> None:
    process = start(write_folder(tmp_path / "m", quant_method="awq"), free_port())
    status, output = exit_of(process)
    assert status == 2
    assert "somner worker: cannot load model: m is not an EXL3 model (quant_method 'awq')" in output


def test_a_generator_variable_that_names_nothing_exits_2(tmp_path: Path) -> None:
    env = {"SOMNER_EXL3_GENERATOR": "tests.fakes.nothing_here:load", "PYTHONPATH": str(ROOT)}
    process = start(write_folder(tmp_path / "m"), free_port(), env=env)
    status, output = exit_of(process)
    assert status == 2
    assert "cannot load model: SOMNER_EXL3_GENERATOR='tests.fakes.nothing_here:load' names no generator" in output


def test_bad_options_exit_2(tmp_path: Path) -> None:
    process = start(write_folder(tmp_path / "m"), free_port(), "--cache-type-k", "q5")
    status, output = exit_of(process)
    assert status == 2
    assert "--cache-type-k and --cache-type-v are f16, q8_0, q6, q4_0" in output
