"""`somner models ...` and `somner ps`: against a running server (fake engines) and offline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from somner.cli import app
from somner.services import build_services
from somner.settings import Settings
from tests.fakes.backends import FakeFarm
from tests.fakes.gguf_files import make_gguf
from tests.fakes.http_files import FileServer, serving
from tests.inprocess import NO_AUTH, ThreadedGateway

runner = CliRunner()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[ThreadedGateway]:
    models = tmp_path / "data" / "models"
    models.mkdir(parents=True)
    for name in ("alpha", "beta"):
        (models / f"{name}.gguf").write_bytes(b"GGUF")
    settings = Settings(data_dir=tmp_path / "data", auth=NO_AUTH)  # type: ignore[arg-type]
    with ThreadedGateway(settings, services=build_services(settings, factory=FakeFarm().factory)) as running:
        yield running


def test_list_load_ps_unload(gateway: ThreadedGateway) -> None:
    url = ["--url", gateway.url]
    listing = runner.invoke(app, ["models", "list", *url])
    assert listing.exit_code == 0, listing.output
    assert "alpha" in listing.output and "unloaded" in listing.output
    loaded = runner.invoke(app, ["models", "load", "alpha", *url])
    assert loaded.exit_code == 0 and "alpha: loaded" in loaded.output
    ps = runner.invoke(app, ["ps", *url])
    assert ps.exit_code == 0
    lines = ps.output.strip().splitlines()
    assert lines[0].split()[:2] == ["NAME", "STATE"]
    assert [line.split()[0] for line in lines[1:]] == ["alpha"]
    unloaded = runner.invoke(app, ["models", "unload", "alpha", *url])
    assert unloaded.exit_code == 0 and "alpha: unloaded" in unloaded.output
    missing = runner.invoke(app, ["models", "load", "gamma", *url])
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_a_server_that_is_not_running_is_reported() -> None:
    result = runner.invoke(app, ["ps", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "is it running" in result.output


def test_pull_and_rm_offline(tmp_path: Path) -> None:
    with serving(FileServer(files={"/m/tiny.gguf": make_gguf([64])})) as hub:
        result = runner.invoke(app, ["models", "pull", f"{hub.url}/m/tiny.gguf", "--data-dir", str(tmp_path)])
        assert result.exit_code == 0, result.output
        assert (tmp_path / "models" / "tiny.gguf").is_file()
        refused = runner.invoke(app, ["models", "pull", f"{hub.url}/m/missing.gguf", "--data-dir", str(tmp_path)])
        assert refused.exit_code == 1 and "404" in refused.output
    removed = runner.invoke(app, ["models", "rm", "tiny", "--data-dir", str(tmp_path)])
    assert removed.exit_code == 0
    assert not (tmp_path / "models" / "tiny.gguf").exists()
    again = runner.invoke(app, ["models", "rm", "tiny", "--data-dir", str(tmp_path)])
    assert again.exit_code == 1
    bad = runner.invoke(app, ["models", "rm", "../etc", "--data-dir", str(tmp_path)])
    assert bad.exit_code == 1


def test_config_check_reads_per_model_files(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "remote.yaml").write_text("urls: [ftp://nowhere]\n")
    result = runner.invoke(app, ["config", "check"], env={"SOMNER_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1
    assert "remote" in result.output
