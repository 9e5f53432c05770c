"""`make wheelhouse` and the air-gapped install it exists for: a fresh venv, pip with no index, then `somner serve`
from that venv answers a chat completion. pip's cache of built wheels makes the llama-cpp-python wheel a copy after
the first build, but the other wheels come from the package index, so this needs it reachable while building."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import link_model
from tests.servers import ADMIN_KEY, free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def offline_environment(tmp_path: Path) -> dict[str, str]:
    """No Somner settings, no Python path into the repository, and no pip configuration that could name an index."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOMNER_", "PIP_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", HOME=str(tmp_path))
    return env


@pytest.mark.timeout(1800)
def test_air_gapped_install_from_the_wheelhouse_serves_a_request(tmp_path: Path, model_path: Path) -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed (Debian package make)")
    wheelhouse = tmp_path / "wheelhouse"
    subprocess.run([make, "-C", str(REPO), "wheelhouse", f"WHEELHOUSE={wheelhouse}"], check=True, timeout=1700)
    wheels = sorted(p.name for p in wheelhouse.glob("*.whl"))
    assert any(name.startswith("llama_cpp_python-0.3.36-") for name in wheels), wheels
    assert any(name.startswith("somner-") for name in wheels), wheels
    assert not [p.name for p in wheelhouse.iterdir() if not p.name.endswith(".whl")], "wheels only, nothing to build"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = offline_environment(tmp_path)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-index", "--find-links", str(wheelhouse), "somner"],
        check=True,
        env=env,
        timeout=600,
    )
    where = subprocess.run(
        [str(python), "-c", "import somner; print(somner.__file__)"],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), f"somner imported from {where}, not the fresh venv"

    data_dir = tmp_path / "data"
    link_model(model_path, data_dir / "models")
    port = free_port()
    log_path = tmp_path / "serve.log"
    env["SOMNER_ADMIN_KEY"] = ADMIN_KEY
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(venv / "bin" / "somner"), "serve", "--data-dir", str(data_dir), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log_path.read_text(errors="replace")
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "not ready:\n" + log_path.read_text(errors="replace")
            time.sleep(0.2)
        response = httpx.post(
            f"{url}/v1/chat/completions",
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
            json={
                "model": model_path.stem,
                "messages": [{"role": "user", "content": "Say hello."}],
                "max_tokens": 8,
                "temperature": 0,
            },
            timeout=120,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["choices"][0]["message"]["content"]
        assert body["usage"]["completion_tokens"] > 0
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert process.returncode == 0, log_path.read_text(errors="replace")
