"""One error vocabulary for the whole server.

Errors are raised where a problem is found, carrying an HTTP status, a stable machine code, a message that is
safe to show a client, and optional headers (Retry-After). Each API dialect renders them once in its own shape.
Foreign exceptions (httpx, llama.cpp, OS errors) are translated where they enter; anything that is not a
`SomnerError` is an internal error: a 500 with a request id, and the traceback only in the log.
"""

from __future__ import annotations

from collections.abc import Mapping


class SomnerError(Exception):
    """Base of every error that may reach a client. `message` must never contain secrets or tracebacks."""

    status: int = 500
    code: str = "internal_error"
    # OpenAI's coarse error class, kept here because several dialects borrow it.
    kind: str = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = dict(headers or {})


class BadRequest(SomnerError):
    status = 400
    code = "invalid_value"
    kind = "invalid_request_error"


class AmbiguousModelName(BadRequest):
    """A model name that, written as the client wrote it, could mean several models."""

    code = "ambiguous_model"


class ContextLengthExceeded(BadRequest):
    code = "context_length_exceeded"


class Unauthorized(SomnerError):
    """No key, or a key that is not (or no longer) valid."""

    status = 401
    code = "invalid_api_key"
    kind = "authentication_error"


class Forbidden(SomnerError):
    """A valid key without the right to do this."""

    status = 403
    code = "permission_denied"
    kind = "permission_error"


class RateLimited(SomnerError):
    """Over a rate limit or quota; `Retry-After` says when the request would be accepted."""

    status = 429
    code = "rate_limit_exceeded"
    kind = "rate_limit_error"


class HeadersTooLarge(SomnerError):
    status = 431
    code = "request_headers_too_large"
    kind = "invalid_request_error"


class PayloadTooLarge(SomnerError):
    status = 413
    code = "request_too_large"
    kind = "invalid_request_error"


class UnsupportedMediaType(SomnerError):
    """A body in a content coding the server does not decode (gzip and deflate are decoded)."""

    status = 415
    code = "unsupported_content_encoding"
    kind = "invalid_request_error"


class RequestTimeout(SomnerError):
    """The client sent its body too slowly (`limits.body_timeout`)."""

    status = 408
    code = "request_timeout"
    kind = "invalid_request_error"


class NotFound(SomnerError):
    status = 404
    code = "not_found"
    kind = "invalid_request_error"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(SomnerError):
    status = 405
    code = "method_not_allowed"
    kind = "invalid_request_error"


class ModelLoadFailed(SomnerError):
    """A model could not be loaded (bad file, engine exited, ready timeout)."""

    status = 503
    code = "model_load_failed"


class EngineFailed(SomnerError):
    """The engine serving a request failed or went away while working on it."""

    status = 502
    code = "engine_error"


class EngineGone(EngineFailed):
    """The engine was not there for a request: the connection was refused or dropped, its socket was missing, its
    process had exited. A request that has had no token yet runs once more on a fresh engine (see the model
    manager's `replace`); when this reaches a client, `Retry-After` says when to try again."""

    code = "engine_unreachable"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code, headers={"Retry-After": "1", **(headers or {})})


class Unavailable(SomnerError):
    """The server cannot take the request now (shutting down, overloaded); `Retry-After` says when to retry."""

    status = 503
    code = "unavailable"


_BY_STATUS: dict[int, type[SomnerError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    429: RateLimited,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    502: EngineFailed,
    503: Unavailable,
}


def error_from_status(status: int, message: str, *, code: str | None = None, param: str | None = None) -> SomnerError:
    """An error reported by another server (an engine), kept with its status, code and parameter."""
    if code == ContextLengthExceeded.code:
        return ContextLengthExceeded(message, param=param)
    if code == ModelNotFound.code:
        return ModelNotFound(message, param=param)
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = BadRequest if 400 <= status < 500 else EngineFailed
    error = cls(message, param=param, code=code)
    if 400 <= status < 500:
        error.status = status
    return error
