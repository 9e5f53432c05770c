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


def test_keys_update(tmp_path: Path) -> None:
    code, out = run(tmp_path, "keys", "create", "--user", "cy", "--models", "a", "--rpm", "5", "--expires", "30d")
    key_id = re.search(r"\bkey_[0-9a-f]{12}\b", out).group(0)  # type: ignore[union-attr]
    secret = re.search(r"\bsk-somner-[A-Za-z0-9_-]{43}\b", out).group(0)  # type: ignore[union-attr]
    code, out = run(tmp_path, "keys", "update", key_id, "--rpm", "50", "--daily-tokens", "9000")
    assert code == 0 and "rpm=50" in out and "daily_tokens=9000" in out, out
    assert secret not in out
    code, listing = run(tmp_path, "keys", "list")
    assert "rpm=50,daily_tokens=9000" in listing and "never" not in listing and " a " in f" {listing} "
    code, out = run(tmp_path, "keys", "update", key_id, "--unset", "rpm", "--unset", "expires", "--unset", "models")
    assert code == 0 and "daily_tokens=9000" in out and "rpm" not in out and "expires never" in out, out
    code, listing = run(tmp_path, "keys", "list")
    assert "rpm=" not in listing and "never" in listing and "all" in listing
    assert "models all" in out and "scopes inference," in out
    code, out = run(tmp_path, "keys", "update", key_id, "--admin")
    assert code == 0 and "scopes admin,inference," in out and "admin,inference" in run(tmp_path, "keys", "list")[1]

    # The checks of `keys create`, and the key store's.
    for args, status, words in (
        (["--rpm", "0"], 2, "rpm"),
        (["--tpm", str(2**31)], 2, "tpm"),
        (["--expires", "never"], 1, "expires"),
        (["--scopes", "root"], 2, "unknown scope"),
        (["--unset", "user"], 2, "--unset takes"),
        (["--rpm", "5", "--unset", "rpm"], 2, "contradict"),
        ([], 2, "nothing to change"),
    ):
        code, out = run(tmp_path, "keys", "update", key_id, *args)
        assert code == status and words in out, (args, code, out)
    code, out = run(tmp_path, "keys", "update", "key_missing", "--rpm", "5")
    assert code == 1 and "no key" in out
    assert run(tmp_path, "keys", "revoke", key_id)[0] == 0
    code, out = run(tmp_path, "keys", "update", key_id, "--rpm", "5")
    assert code == 1 and "revoked" in out
