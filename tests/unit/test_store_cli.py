"""`somner users|keys|usage` offline, on the server's database (SQLite here; the same code runs on PostgreSQL)."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from somner.cli import app

runner = CliRunner()


def run(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--data-dir", str(tmp_path)])
    return result.exit_code, result.output


def test_users_and_keys(tmp_path: Path) -> None:
    assert run(tmp_path, "users", "add", "ann")[0] == 0
    code, out = run(tmp_path, "users", "add", "ann")
    assert code == 1 and "already exists" in out
    code, out = run(tmp_path, "keys", "create", "--user", "ann", "--models", "a,b", "--rpm", "5", "--expires", "30d")
    assert code == 0
    key_id = re.search(r"\bkey_[0-9a-f]{12}\b", out).group(0)  # type: ignore[union-attr]
    secret = re.search(r"\bsk-somner-[A-Za-z0-9_-]{43}\b", out).group(0)  # type: ignore[union-attr]
    code, listing = run(tmp_path, "keys", "list")
    assert code == 0 and key_id in listing and "a,b" in listing and "rpm=5" in listing
    assert secret not in listing and secret[:16] in listing
    code, out = run(tmp_path, "keys", "rotate", key_id)
    assert code == 0 and "sk-somner-" in out
    assert "revoked" in run(tmp_path, "keys", "list", "--all")[1]
    assert run(tmp_path, "keys", "revoke", "key_missing")[0] == 1
    code, out = run(tmp_path, "users", "list")
    assert code == 0 and "ann" in out
    assert run(tmp_path, "users", "rm", "ann")[0] == 0
    assert run(tmp_path, "users", "rm", "ann")[0] == 1
    code, out = run(tmp_path, "keys", "create", "--user", "bo", "--expires", "never")
    assert code == 1


def test_import_and_usage(tmp_path: Path) -> None:
    seed = tmp_path / "keys.txt"
    seed.write_text("alpha:aaaaaaaaaaaaaaaaaaaa\nbeta:bbbbbbbbbbbbbbbbbbbb\n")
    code, out = run(tmp_path, "keys", "import", str(seed))
    assert code == 0 and "imported 2" in out
    bad = tmp_path / "bad.txt"
    bad.write_text("nonsense\n")
    code, out = run(tmp_path, "keys", "import", str(bad))
    assert code == 1 and "line 1" in out
    code, out = run(tmp_path, "usage", "--by", "model", "--since", "1d")
    assert code == 0 and out.split()[0] == "MODEL"
    assert run(tmp_path, "usage", "--by", "planet")[0] == 1
