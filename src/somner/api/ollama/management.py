"""Ollama's model management: `/api/pull`, `/api/delete`, `/api/copy` (admin keys only).

Pulls download GGUF files (Hugging Face or a URL) with `somner.models.pull` in a worker thread, streaming its
progress as NDJSON; if the client leaves, the download still finishes (a thread cannot be stopped midway), and a
broken-off transfer resumes on the next pull. Copies make aliases and deletes remove aliases or model files,
through `somner.models.library`; what the main configuration file defines is changed there, not over HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from somner.api.errors import internal_error
from somner.api.handlers import json_response, read_request, services_of
from somner.api.ollama import lookup
from somner.api.ollama.generation import ollama_endpoint
from somner.api.principal import require_admin
from somner.api.streaming import event_stream
from somner.errors import BadRequest, SomnerError, Unavailable
from somner.models import library
from somner.models.names import is_valid_model_name
from somner.models.pull import PullError
from somner.models.pull import pull as pull_model
from somner.models.registry import ModelSpec
from somner.services import Services
from somner.wire.ollama import decode, encode, schemas

log = logging.getLogger(__name__)

_PROGRESS_EVERY = 0.1  # seconds between progress lines


def _pull_failed(error: PullError) -> SomnerError:
    if error.resumable:
        return Unavailable(f"The pull failed: {error}", headers={"Retry-After": "5"})
    return BadRequest(f"The pull failed: {error}", param="model")


class _PullProgress:
    """Bytes so far, reported from the download thread into the event loop, at most every _PROGRESS_EVERY."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[int, int | None] | None] = asyncio.Queue()
        self._last = 0.0

    def report(self, done: int, total: int | None) -> None:  # called in the download thread
        now = time.monotonic()
        if now - self._last >= _PROGRESS_EVERY or (total is not None and done >= total):
            self._last = now
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (done, total))

    def finish(self, _task: object) -> None:  # called in the loop when the download ends
        self.queue.put_nowait(None)


@ollama_endpoint
async def pull(request: Request) -> Response:
    require_admin(request)
    services = services_of(request)
    wire = decode.parse(schemas.PullRequest, await read_request(request))
    source = decode.pull_source(decode.model_name(wire.model, wire.name))
    # Ollama names the layer being pulled by its digest; Somner knows no digest before the download ends, so the
    # source's hash stands in for it (stable across resumed pulls of the same source).
    digest = "sha256:" + hashlib.sha256(source.encode()).hexdigest()
    tracker = _PullProgress(asyncio.get_running_loop())
    download = asyncio.ensure_future(
        asyncio.to_thread(
            pull_model,
            source,
            services.registry.models_dir,
            max_bytes=int(services.settings.max_pull_bytes),
            progress=tracker.report,
        )
    )
    download.add_done_callback(tracker.finish)
    if not wire.stream:
        await _finished(services, download)
        return json_response({"status": "success"})

    async def lines() -> AsyncIterator[bytes]:
        try:
            yield encode.progress("pulling manifest")
            while (item := await tracker.queue.get()) is not None:
                done, total = item
                yield encode.progress(f"pulling {digest[7:19]}", digest=digest, total=total, completed=done)
            yield encode.progress("verifying sha256 digest")
            path = await _finished(services, download)
            yield encode.progress(f"writing {path.stem}")
            yield encode.progress("success")
        except SomnerError as exc:
            yield encode.error_line(exc)
        except Exception:
            log.exception("pull of %s failed", source)
            yield encode.error_line(internal_error(request))

    return event_stream(lines(), media_type=encode.MEDIA_TYPE)


async def _finished(services: Services, download: asyncio.Future[Path]) -> Path:
    """The pulled file, once the download ends (its header was checked by the pull); the registry lists it."""
    try:
        path = await download
    except PullError as exc:
        raise _pull_failed(exc) from None
    services.registry.refresh()
    return path


def _configured(services: Services, model_id: str) -> list[str] | None:
    """The aliases the main configuration gives `model_id`, or None if it does not define the model."""
    for entry in services.settings.models:
        if entry.id == model_id:
            return list(entry.aliases)
    return None


def _in_models_dir(spec: ModelSpec, models_dir: Path) -> bool:
    return spec.path is None or spec.path.resolve().parent == models_dir.resolve()


@ollama_endpoint
async def delete(request: Request) -> Response:
    """An alias is removed; a model's GGUF and model file are deleted (after unloading it)."""
    require_admin(request)
    services = services_of(request)
    wire = decode.parse(schemas.ModelRequest, await read_request(request))
    registry = services.registry
    name = decode.model_name(wire.model, wire.name)
    spec = registry.get(name)
    known = lookup.registered_name(registry, name) or spec.id
    configured = _configured(services, spec.id)
    models_dir = registry.models_dir
    try:
        if known != spec.id:
            if configured is not None and known in configured:
                raise BadRequest(f"The alias '{known}' is set in the configuration file; remove it there.")
            await asyncio.to_thread(library.remove_alias, models_dir, spec.id, known, list(spec.entry.aliases))
        else:
            if configured is not None or spec.source == "cli":
                raise BadRequest(f"The model '{spec.id}' is defined in the configuration; remove it there.")
            if not _in_models_dir(spec, models_dir):
                raise BadRequest(f"The model '{spec.id}' is a file outside the models directory; Somner keeps it.")
            await services.manager.unload(spec.id)
            await asyncio.to_thread(library.delete_model, models_dir, spec.id, spec.path)
    except library.LibraryError as exc:
        raise BadRequest(str(exc)) from None
    registry.refresh()
    return Response(status_code=200)


@ollama_endpoint
async def copy(request: Request) -> Response:
    """`destination` becomes another name (an alias) of `source`'s model; nothing is copied on disk."""
    require_admin(request)
    services = services_of(request)
    wire = decode.parse(schemas.CopyRequest, await read_request(request))
    registry = services.registry
    spec = registry.get(wire.source)
    destination = wire.destination.removesuffix(lookup.LATEST)  # listed as `name:latest` either way
    if not is_valid_model_name(destination):
        raise BadRequest(
            f"Invalid value for 'destination': {wire.destination!r} is not a valid model name "
            "(letters, digits, '.', '_', '-' or ':', no '/' or '..').",
            param="destination",
        )
    taken = registry.find(destination)
    if taken is not None:
        raise BadRequest(f"The name '{wire.destination}' is already taken by '{taken.id}'.", param="destination")
    try:
        await asyncio.to_thread(library.add_alias, registry.models_dir, spec.id, destination, list(spec.entry.aliases))
    except library.LibraryError as exc:
        raise BadRequest(str(exc), param="destination") from None
    registry.refresh()
    if registry.find(destination) is None:
        raise BadRequest(f"The alias '{destination}' could not be added (see the server log).", param="destination")
    return Response(status_code=200)
