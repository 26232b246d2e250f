"""Errors in OpenAI's format, `{"error": {"message", "type", "param", "code"}}`, with the
status codes OpenAI uses: 400 for a bad request (malformed JSON, wrong types, invalid values,
a prompt longer than the context), 404 for an unknown model or URL, 413 for a body over
`server.max_body_mb`, 429 with Retry-After when a service's queue is full, 503 while shutting
down, 500 for a server bug. A client's values are echoed cut to a few dozen characters."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("seallm.server")

BODY_KEY = "seallm.body"  # the ASGI scope key under which `middleware.RequestBody` keeps it


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(
    message: str,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none", "nullable"}


def _is_tag(text: str) -> bool:
    return text in _TYPE_TAGS or "[" in text or "-" in text or text[:1].isupper()


def _param(loc: tuple[Any, ...]) -> str:
    """('body', 'messages', 0, 'role') -> 'messages[0].role' (without pydantic's union tags
    such as 'str', 'list[str]' or a model's class name)."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = str(part)
        if _is_tag(text):
            continue
        out += f".{text}" if out else text
    return clip(out, 100)


SHOWN_CHARS = 60  # the most characters of a client's value that a message echoes


def clip(text: str, limit: int = SHOWN_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """A client's value as a message quotes it: a string as Python writes it (quoted and
    escaped, so that a lone surrogate cannot break the JSON answer), bytes as b'...', anything
    else as JSON (Python's repr where it is not JSON); at most `limit` characters."""
    if isinstance(value, str):
        text = repr(value[: limit + 1])
    elif isinstance(value, bytes | bytearray | memoryview):
        text = repr(bytes(value[: limit + 1]))
    else:
        try:
            text = json.dumps(value)
        except (TypeError, ValueError, RecursionError):
            try:
                text = repr(value)
            except Exception:  # nested too deep for repr too
                text = f"a {type(value).__name__}"
    return clip(text, limit)


MAX_JSON_DEPTH = 256  # a request nested deeper than this is reported as too deep


def parse_problem(body: bytes, cause: BaseException | None) -> str:
    """Why a body the JSON parser gave up on is not JSON, and where: its first invalid
    UTF-8 byte, or where it nests too deep (Python's parser recurses)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        return (
            f"The request body is not valid UTF-8: byte 0x{body[err.start]:02x} at byte "
            f"{err.start} ({err.reason}); send JSON encoded as UTF-8"
        )
    if isinstance(cause, RecursionError):
        where = _too_deep(text)
        at = (
            f" (level {MAX_JSON_DEPTH + 1} opens at character {where})" if where is not None else ""
        )
        return (
            "The request body could not be parsed as JSON: its arrays and objects are nested "
            f"too deeply for the parser{at}; a request needs only a few levels"
        )
    reason = f": {type(cause).__name__}: {cause}" if cause is not None else ""
    return clip(f"The request body could not be parsed as JSON{reason}", 200)


def _too_deep(text: str) -> int | None:
    """The character at which `text`'s [ and { nesting first exceeds MAX_JSON_DEPTH."""
    depth, quoted, escaped = 0, False, False
    for i, ch in enumerate(text):
        if quoted:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return i
        elif ch in "]}":
            depth -= 1
    return None


def _most_telling(errors: list[Any]) -> Any:
    """The telling error of a union's alternatives: a value error (range, length) rather than
    a type error; then one of the alternative that got furthest into the value before it
    failed (a list of token ids whose second is 66.0 fails there as integers, but at its
    first as strings)."""

    def alternative(loc: tuple[Any, ...]) -> tuple[Any, ...]:
        for i, part in enumerate(loc[2:], 2):
            if isinstance(part, str) and _is_tag(part):
                return loc[: i + 1]
        return loc

    def position(loc: tuple[Any, ...], alt: tuple[Any, ...]) -> list[int]:
        return [p for p in loc[len(alt) :] if isinstance(p, int)]

    first: dict[tuple[Any, ...], list[int]] = {}
    for e in errors:
        loc = tuple(e.get("loc", ()))
        alt = alternative(loc)
        first[alt] = min(first.get(alt, position(loc, alt)), position(loc, alt))

    def score(e: Any) -> tuple[bool, list[int]]:
        loc = tuple(e.get("loc", ()))
        return not e.get("type", "").endswith("_type"), first[alternative(loc)]

    return max(errors, key=score)


def validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    """One precise message for the first invalid field of a request body, and its parameter.
    For a field of several accepted types (a union), the error of the alternative the value
    matched in type is the telling one (a list of 5 stop strings is 'too long', not 'not a
    string')."""
    errors = err.errors()
    if not errors:
        return "invalid request", None
    e = errors[0]
    kind, loc = e.get("type", ""), tuple(e.get("loc", ()))
    if kind == "json_invalid":
        where = f" at character {loc[1]}" if len(loc) > 1 else ""
        reason = (e.get("ctx") or {}).get("error", "JSON decode error")
        return f"The request body is not valid JSON: {reason}{where}", None
    if loc == ("body",):
        if kind == "missing":
            return "The request body is missing: send a JSON object", None
        return f"The request body must be a JSON object, got {shown(e.get('input'))}", None
    field = loc[:2]
    same = [x for x in errors if tuple(x.get("loc", ()))[:2] == field]
    e = _most_telling(same)
    param = _param(tuple(e.get("loc", ())))
    message = f"{param}: {e.get('msg', 'invalid value')}"
    if "input" in e and e["input"] is None and e.get("type", "").endswith("_type"):
        message = f"{param}: must not be null ({e.get('msg', 'invalid value')})"
    elif e.get("type") != "missing" and "input" in e:
        message += f" (got {shown(e['input'])})"
    more = len({tuple(x.get("loc", ()))[:2] for x in errors} - {field})
    if more:
        message += f"; and {more} more invalid field{'s' if more > 1 else ''}"
    return message, param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(exc)
        return APIError(400, message, param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        path = clip(request.url.path, 100)
        if exc.status_code == 404:
            message = f"Unknown URL: {request.method} {path}"
            code = "unknown_url"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {path}"
            code = "method_not_allowed"
        elif exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI's "There was an error parsing the body" (bad UTF-8, too deep): say why.
            body = request.scope.get(BODY_KEY)
            if body is None:
                body = await request.body()
            message = await asyncio.to_thread(parse_problem, body, exc.__cause__)
            code = None
        else:
            message, code = str(exc.detail), None
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return APIError(exc.status_code, message, kind, code=code, headers=exc.headers).response()

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return APIError(
            500, f"internal server error: {type(exc).__name__}", "server_error"
        ).response()
