"""`somner models pull` against a local HTTP server that the test starts (no hub is reachable here)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from somner.models.gguf import check_complete
from somner.models.pull import PullError, pull
from tests.fakes.gguf_files import make_gguf
from tests.fakes.http_files import FileServer, serving

GOOD = make_gguf([1000, 5000])
LIMIT = 10 * 1024**2


@pytest.fixture
def hub() -> Iterator[FileServer]:
    with serving(FileServer()) as state:
        yield state


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_a_good_file_lands_atomically(hub: FileServer, tmp_path: Path) -> None:
    hub.files["/files/tiny-model.gguf"] = GOOD
    seen: list[int] = []
    path = pull(f"{hub.url}/files/tiny-model.gguf", tmp_path, max_bytes=LIMIT, progress=lambda d, t: seen.append(d))
    assert path == tmp_path / "tiny-model.gguf"
    assert path.read_bytes() == GOOD
    check_complete(path)
    assert seen[-1] == len(GOOD)
    assert leftovers(tmp_path) == ["tiny-model.gguf"]
    with pytest.raises(PullError, match="already"):
        pull(f"{hub.url}/files/tiny-model.gguf", tmp_path, max_bytes=LIMIT)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (GOOD[: len(GOOD) - 100], "truncated"),  # whole transfer, but the file lacks tensor data
        (b"PK\x03\x04" + GOOD[4:], "bad magic"),
        (b"GGUF" + b"\xff" * 60, "not a usable GGUF"),
    ],
)
def test_bad_files_are_refused_and_leave_nothing(hub: FileServer, tmp_path: Path, content: bytes, message: str) -> None:
    hub.files["/files/bad.gguf"] = content
    with pytest.raises(PullError, match=message):
        pull(f"{hub.url}/files/bad.gguf", tmp_path, max_bytes=LIMIT)
    assert leftovers(tmp_path) == []


def test_over_size_files_are_refused(hub: FileServer, tmp_path: Path) -> None:
    hub.files["/files/big.gguf"] = GOOD
    with pytest.raises(PullError, match="limit"):
        pull(f"{hub.url}/files/big.gguf", tmp_path, max_bytes=len(GOOD) - 1)
    assert leftovers(tmp_path) == []
    hub.files["/files/liar.gguf"] = GOOD  # announces a small length, sends more
    hub.lie_length["/files/liar.gguf"] = 10
    with pytest.raises(PullError):
        pull(f"{hub.url}/files/liar.gguf", tmp_path, max_bytes=LIMIT)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "source",
    ["/files/..%2F..%2Fescape.gguf", "/files/..escape.gguf", "/files/notes.txt", "/files/bad%20name.gguf"],
)
def test_bad_names_are_refused_before_any_download(hub: FileServer, tmp_path: Path, source: str) -> None:
    with pytest.raises(PullError):
        pull(f"{hub.url}{source}", tmp_path / "models", max_bytes=LIMIT)
    assert not (tmp_path / "escape.gguf").exists()
    assert leftovers(tmp_path / "models") == []
    assert all(not path.endswith(".gguf") or "escape" not in path for path, _, _ in hub.requests)


def test_a_broken_transfer_resumes(hub: FileServer, tmp_path: Path) -> None:
    hub.files["/files/resume.gguf"] = GOOD
    hub.drop_after["/files/resume.gguf"] = 3000
    with pytest.raises(PullError, match="resume"):
        pull(f"{hub.url}/files/resume.gguf", tmp_path, max_bytes=LIMIT)
    assert leftovers(tmp_path) == [".resume.gguf.partial"]  # hidden: the registry never sees it
    path = pull(f"{hub.url}/files/resume.gguf", tmp_path, max_bytes=LIMIT)
    assert path.read_bytes() == GOOD
    assert hub.requests[-1][1] == "bytes=3000-", hub.requests
    assert leftovers(tmp_path) == ["resume.gguf"]


def test_hugging_face_sources(hub: FileServer, tmp_path: Path) -> None:
    hub.listings["org/repo-GGUF"] = ["README.md", "model-Q8_0.gguf", "model-Q4_K_M.gguf", "big-00001-of-00002.gguf"]
    hub.files["/org/repo-GGUF/model-Q4_K_M.gguf"] = GOOD
    hub.files["/org/repo-GGUF/model-Q8_0.gguf"] = GOOD
    env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_secret"}
    assert pull("hf:org/repo-GGUF", tmp_path, max_bytes=LIMIT, environ=env).name == "model-Q4_K_M.gguf"
    assert pull("hf:org/repo-GGUF:q8_0", tmp_path, max_bytes=LIMIT, environ=env).name == "model-Q8_0.gguf"
    assert all(auth == "Bearer hf_secret" for _, _, auth in hub.requests)
    with pytest.raises(PullError, match="no file"):
        pull("hf:org/repo-GGUF:other.gguf", tmp_path, max_bytes=LIMIT, environ=env)
    with pytest.raises(PullError, match="404"):
        pull("hf:org/missing", tmp_path, max_bytes=LIMIT, environ=env)
    with pytest.raises(PullError, match="expected"):
        pull("hf:../etc", tmp_path, max_bytes=LIMIT, environ=env)
    with pytest.raises(PullError, match="expected"):
        pull("ftp://example.com/x.gguf", tmp_path, max_bytes=LIMIT, environ=env)
