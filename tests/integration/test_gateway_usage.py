"""Keys, quotas and usage records with the real engine, on SQLite and PostgreSQL (one run with PostgreSQL stopped
part of the way through)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from somner.settings import Settings
from tests.conftest import link_model
from tests.inprocess import ThreadedGateway
from tests.pg import BIN, PostgresCluster

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m-q4_k_m"
ADMIN = "sk-somner-integration-admin-key-00000000000000000000"


def gateway_settings(tmp_path: Path, model_path: Path, database_url: str | None, **extra: Any) -> Settings:
    link_model(model_path, tmp_path / "data" / "models")
    options: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "engine": {"ctx": 1024, "parallel": 4, "threads": 2},
        "auth": {"admin_key": ADMIN, "cache_ttl": 600},
        **extra,
    }
    if database_url is not None:
        options["database"] = {"url": database_url, "batch_interval": 0.2}
    return Settings(**options)


def new_key(base: str, **rights: Any) -> str:
    response = httpx.post(
        f"{base}/admin/keys", json={"user": "quinn", **rights}, headers={"authorization": f"Bearer {ADMIN}"}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


def chat(base: str, key: str, **extra: Any) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 20, **extra}
    return httpx.post(f"{base}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=120)


def test_token_limits_use_real_generation_counts(tmp_path: Path, model_path: Path, database_url: str | None) -> None:
    with ThreadedGateway(gateway_settings(tmp_path, model_path, database_url)) as gateway:
        per_minute = new_key(gateway.url, tpm=60)
        first = chat(gateway.url, per_minute, logit_bias={"1": -100, "106": -100})
        assert first.status_code == 200
        used = first.json()["usage"]["total_tokens"]
        assert used > 20  # the prompt's tokens count too
        second = chat(gateway.url, per_minute)
        assert second.status_code == 200
        total = used + second.json()["usage"]["total_tokens"]
        third = chat(gateway.url, per_minute)
        if total >= 60:
            assert third.status_code == 429
            assert third.headers["x-ratelimit-remaining-tokens"] == "0"
        daily = new_key(gateway.url, daily_tokens=30)
        assert chat(gateway.url, daily).status_code == 200
        refused = chat(gateway.url, daily)
        assert refused.status_code == 429
        assert "Daily quota" in refused.json()["error"]["message"]


def usage_rows(gateway: ThreadedGateway, database_url: str | None) -> dict[str, tuple[Any, ...]]:
    """Usage rows of the mixed load, by request id, read straight from the database (after a flush)."""
    flushed = httpx.get(f"{gateway.url}/admin/usage", headers={"authorization": f"Bearer {ADMIN}"}, timeout=60)
    assert flushed.status_code == 200
    query = (
        "SELECT request_id, status, prompt_tokens, completion_tokens, disconnected FROM usage "
        "WHERE request_id LIKE 'mix-%'"
    )
    if database_url is None:
        with sqlite3.connect(gateway.services.paths.data_dir / "somner.db") as connection:
            rows = [tuple(row) for row in connection.execute(query)]
    else:
        port, name = database_url.rsplit(":", 1)[1].split("/")
        out = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d", name, "-At", "-F", "|", "-c", query],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows = []
        for line in out.splitlines():
            rid, status, prompt, completion, disconnected = line.split("|")
            rows.append((rid, int(status), int(prompt), int(completion), disconnected == "t"))
    counted: dict[str, tuple[Any, ...]] = {}
    for row in rows:
        assert row[0] not in counted, f"two records for {row[0]}"
        counted[str(row[0])] = (int(row[1]), int(row[2]), int(row[3]), bool(row[4]))
    return counted


KINDS = ("whole", "stream", "cancelled", "failed")


def run_mixed_load(base: str, key: str, total: int, during: dict[int, Any] | None = None) -> dict[int, dict[str, Any]]:
    """`total` requests of four kinds, eight at a time; `during` runs a callback when a request number starts."""
    outcomes: dict[int, dict[str, Any]] = {}
    lock = threading.Lock()

    def one(i: int) -> None:
        if during and i in during:
            during[i]()
        kind = KINDS[i % 4]
        headers = {"authorization": f"Bearer {key}", "x-request-id": f"mix-{i}"}
        body: dict[str, Any] = {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"Story {i}"}],
            "max_tokens": 6,
        }
        if kind == "failed":
            body["grammar"] = "root ::= ("  # refused by the engine, after admission
        if kind in ("stream", "cancelled"):
            body.update(stream=True, stream_options={"include_usage": True}, logit_bias={"1": -100, "106": -100})
        if kind == "cancelled":
            body["max_tokens"] = 400
        result: dict[str, Any] = {"kind": kind}
        with httpx.Client(timeout=120) as client:
            if kind in ("whole", "failed"):
                response = client.post(f"{base}/v1/chat/completions", json=body, headers=headers)
                result.update(status=response.status_code, usage=response.json().get("usage"))
            else:
                chunks = 0
                with client.stream("POST", f"{base}/v1/chat/completions", json=body, headers=headers) as response:
                    for line in response.iter_lines():
                        if line.startswith("data: {") and '"usage":{' in line:
                            result["usage"] = json.loads(line[6:])["usage"]
                        elif line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                            chunks += 1
                        if kind == "cancelled" and chunks >= 3:
                            break  # leaving the block closes the connection mid-stream
                result.update(status=response.status_code, chunks=chunks)
        with lock:
            outcomes[i] = result

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(total)))
    return outcomes


def check_records(rows: dict[str, tuple[Any, ...]], outcomes: dict[int, dict[str, Any]]) -> None:
    assert sorted(rows) == sorted(f"mix-{i}" for i in outcomes), "exactly one record per request"
    for i, outcome in outcomes.items():
        status, prompt, completion, disconnected = rows[f"mix-{i}"]
        kind = outcome["kind"]
        if kind in ("whole", "stream"):
            usage = outcome["usage"]
            assert (status, disconnected) == (200, False)
            assert (prompt, completion) == (usage["prompt_tokens"], usage["completion_tokens"]), (i, kind)
        elif kind == "cancelled":
            assert (status, disconnected) == (499, True)
            assert prompt > 0  # reported by the engine before the first token
            assert outcome["chunks"] <= completion < 400  # what was relayed before the client left
        else:
            assert (status, completion, disconnected) == (400, 0, False)


def test_exactly_one_record_per_request(tmp_path: Path, model_path: Path, database_url: str | None) -> None:
    with ThreadedGateway(gateway_settings(tmp_path, model_path, database_url)) as gateway:
        key = new_key(gateway.url)
        outcomes = run_mixed_load(gateway.url, key, 200)
        rows = usage_rows(gateway, database_url)
    assert sum(1 for o in outcomes.values() if o["kind"] == "failed" and o["status"] == 400) == 50
    check_records(rows, outcomes)


@pytest.mark.skipif(not (BIN / "pg_ctl").exists(), reason="PostgreSQL binaries not installed")
def test_no_record_is_lost_while_postgresql_is_down(tmp_path: Path, model_path: Path) -> None:
    cluster = PostgresCluster()
    cluster.start()
    try:
        url = cluster.create_database()
        with ThreadedGateway(gateway_settings(tmp_path, model_path, url)) as gateway:
            key = new_key(gateway.url)
            outcomes = run_mixed_load(gateway.url, key, 200, during={40: cluster.stop, 120: cluster.start})
            rows = usage_rows(gateway, url)
            assert gateway.services.recorder.spooled > 0, "the outage should have spooled some records"
            assert not (gateway.services.paths.data_dir / "usage-spool.jsonl").exists()
        check_records(rows, outcomes)
    finally:
        cluster.remove()
