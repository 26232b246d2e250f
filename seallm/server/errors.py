"""Errors in OpenAI's format, `{"error": {"message", "type", "param", "code"}}`, with the
status codes OpenAI uses: 400 for a bad request (malformed JSON, wrong types, invalid values,
a prompt longer than the context), 404 for an unknown model or URL, 429 with Retry-After when a
service's queue is full, 503 while shutting down, 500 for a server bug."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("seallm.server")


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


def _param(loc: tuple[Any, ...]) -> str:
    """('body', 'messages', 0, 'role') -> 'messages[0].role' (without pydantic's union tags
    such as 'str', 'list[str]' or a model's class name)."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = str(part)
        if text in _TYPE_TAGS or "[" in text or "-" in text or text[:1].isupper():
            continue
        out += f".{text}" if out else text
    return out


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
        return f"The request body must be a JSON object, got {_shown(e.get('input'))}", None
    field = loc[:2]
    same = [x for x in errors if tuple(x.get("loc", ()))[:2] == field]
    e = next((x for x in same if not x.get("type", "").endswith("_type")), same[0])
    param = _param(tuple(e.get("loc", ())))
    message = f"{param}: {e.get('msg', 'invalid value')}"
    if e.get("type") != "missing" and "input" in e:
        message += f" (got {_shown(e['input'])})"
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
        if exc.status_code == 404:
            message = f"Unknown URL: {request.method} {request.url.path}"
            code = "unknown_url"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
            code = "method_not_allowed"
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
