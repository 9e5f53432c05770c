"""Downloading GGUF models into the models directory: `somner models pull SOURCE`.

SOURCE is `hf:ORG/REPO[:QUANT_OR_FILE]` (Hugging Face; `HF_ENDPOINT` and `HF_TOKEN` are honoured) or an
http(s) URL of a .gguf file. The download goes to a hidden `.<name>.partial` file beside the target (so the
registry never sees it), resumes from there with an HTTP range request when run again, is bounded in size, and is
checked before it is renamed into place atomically: a GGUF header, and enough bytes for every tensor it declares.
The file name is validated as a model id: nothing is ever written outside the models directory.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit

import httpx

from somner.models.gguf import MAGIC, GGUFError
from somner.models.names import is_valid_model_name
from somner.models.vetting import vet_model_file

Progress = Callable[[int, int | None], None]
"""Called with (bytes so far, total bytes if known)."""

_HF_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_PREFERRED_QUANTS = ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q8_0")


class PullError(ValueError):
    """The pull was refused or failed; the message says why. Nothing is left in place of the model; a transfer
    that broke off leaves its hidden partial file, which the next pull of the same source resumes."""

    def __init__(self, message: str, *, resumable: bool = False) -> None:
        super().__init__(message)
        self.resumable = resumable


@dataclass(frozen=True, slots=True)
class Download:
    url: str
    filename: str
    headers: dict[str, str]


def _checked_name(filename: str) -> str:
    """The local file name for a remote one; refuses anything that is not a plain, valid model file name."""
    name = unquote(filename)
    stem = name[: -len(".gguf")] if name.lower().endswith(".gguf") else ""
    if not stem:
        raise PullError(f"{filename!r} is not a .gguf file")
    if "/" in name or "\\" in name or not is_valid_model_name(stem):
        raise PullError(f"{filename!r} cannot be a model name: use letters, digits, '.', '_', '-' (no '..' or '/')")
    return f"{stem}.gguf"


def _pick_hf_file(repo: str, files: list[str], selector: str) -> str:
    ggufs = [f for f in files if f.lower().endswith(".gguf")]
    if not ggufs:
        raise PullError(f"{repo} has no .gguf files")
    if selector.lower().endswith(".gguf"):
        if selector not in ggufs:
            raise PullError(f"{repo} has no file {selector!r}; it has: {', '.join(ggufs)}")
        return selector
    if selector:
        matches = [f for f in ggufs if selector.lower() in PurePosixPath(f).name.lower()]
    else:
        matches = ggufs if len(ggufs) == 1 else []
        for quant in _PREFERRED_QUANTS:
            matches = matches or [f for f in ggufs if quant.lower() in f.lower()]
    matches = [f for f in matches if not re.search(r"-\d{5}-of-\d{5}\.gguf$", f)]  # split files need merging
    if len(matches) != 1:
        which = f"matching {selector!r} " if selector else ""
        raise PullError(f"{repo} has {len(matches) or 'no'} single .gguf files {which}; name one: {', '.join(ggufs)}")
    return matches[0]


def resolve(source: str, client: httpx.Client, environ: dict[str, str] | None = None) -> Download:
    """Where SOURCE downloads from, and the local file name."""
    env = dict(os.environ if environ is None else environ)
    if source.startswith("hf:"):
        repo, _, selector = source[3:].partition(":")
        if not _HF_REPO.fullmatch(repo) or ".." in repo:
            raise PullError(f"{source!r}: expected hf:ORG/REPO[:QUANT or FILE]")
        endpoint = env.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        headers = {"authorization": f"Bearer {env['HF_TOKEN']}"} if env.get("HF_TOKEN") else {}
        try:
            response = client.get(f"{endpoint}/api/models/{repo}", headers=headers)
        except httpx.HTTPError as exc:
            raise PullError(f"cannot reach {endpoint}: {exc}") from exc
        if response.status_code != 200:
            raise PullError(f"{endpoint} answered {response.status_code} for {repo}")
        try:
            files = [str(s["rfilename"]) for s in response.json().get("siblings", [])]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PullError(f"{endpoint} sent an unexpected listing for {repo}") from exc
        chosen = _pick_hf_file(repo, files, selector)
        url = f"{endpoint}/{repo}/resolve/main/{quote(chosen)}"
        return Download(url=url, filename=_checked_name(PurePosixPath(chosen).name), headers=headers)
    parts = urlsplit(source)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PullError(f"{source!r}: expected hf:ORG/REPO[:QUANT or FILE] or an http(s) URL of a .gguf file")
    raw_name = parts.path.rsplit("/", 1)[-1]
    return Download(url=source, filename=_checked_name(raw_name), headers={})


def pull(
    source: str,
    models_dir: Path,
    *,
    max_bytes: int,
    progress: Progress | None = None,
    client: httpx.Client | None = None,
    environ: dict[str, str] | None = None,
) -> Path:
    """Download SOURCE into `models_dir`; returns the new model file. Raises PullError."""
    own = client is None
    http = client or httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30.0, read=120.0))
    try:
        download = resolve(source, http, environ)
        models_dir.mkdir(parents=True, exist_ok=True)
        target = models_dir / download.filename
        if target.resolve().parent != models_dir.resolve():
            raise PullError(f"{download.filename!r} would land outside the models directory")
        if target.exists():
            raise PullError(f"{target.name} is already in the models directory (remove it first to replace it)")
        partial = models_dir / f".{download.filename}.partial"
        _fetch(http, download, partial, max_bytes, progress)
        try:
            vet_model_file(partial)
        except GGUFError as exc:
            partial.unlink(missing_ok=True)
            raise PullError(f"the download is not a usable GGUF file: {exc}") from exc
        os.replace(partial, target)
        return target
    finally:
        if own:
            http.close()


def _fetch(http: httpx.Client, download: Download, partial: Path, max_bytes: int, progress: Progress | None) -> None:
    offset = partial.stat().st_size if partial.exists() else 0
    headers = dict(download.headers)
    if offset:
        headers["range"] = f"bytes={offset}-"
    try:
        with http.stream("GET", download.url, headers=headers) as response:
            if response.status_code == 416 and offset:
                return  # nothing left to fetch: the partial file is whole
            if response.status_code not in (200, 206):
                raise PullError(f"the server answered {response.status_code} for {download.url}")
            if response.status_code == 200:
                offset = 0  # no range support: start over
            length = response.headers.get("content-length")
            total = offset + int(length) if length and length.isdigit() else None
            if total is not None and total > max_bytes:
                partial.unlink(missing_ok=True)
                raise PullError(f"the file has {total} bytes, more than the limit of {max_bytes}")
            done = offset
            with partial.open("r+b" if offset else "wb") as out:
                out.seek(offset)
                out.truncate()
                for block in response.iter_bytes():
                    if done == 0 and block[:4] != MAGIC[: len(block[:4])]:
                        raise PullError("the file is not a GGUF file (bad magic)")
                    done += len(block)
                    if done > max_bytes:
                        raise PullError(f"the file is larger than the limit of {max_bytes} bytes")
                    out.write(block)
                    if progress is not None:
                        progress(done, total)
                out.flush()
                os.fsync(out.fileno())
            if total is not None and done < total:
                raise PullError(
                    f"the transfer stopped at {done} of {total} bytes; run the pull again to resume", resumable=True
                )
    except PullError as exc:
        if not exc.resumable:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
        raise
    except httpx.HTTPError as exc:
        raise PullError(f"the transfer failed ({exc}); run the pull again to resume", resumable=True) from exc
