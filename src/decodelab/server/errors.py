"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}, one clear message each.

A request's own mistakes (`BadInput`, `Unsupported`, validation) are 4xx that say what to change. Anything
else is the server's fault: a 500 with a generic message, and the traceback goes to the log, not the client.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from decodelab.errors import BadInput, ModelNotFound, Unsupported

log = logging.getLogger("decodelab.server")
INTERNAL_ERROR = "internal error: the server failed on this request (details are in its log); please report it"


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def response(self) -> JSONResponse:
        return JSONResponse(
            error_body(self.message, self.type, self.param, self.code), status_code=self.status, headers=self.headers
        )


class ErrorDetail(BaseModel):
    message: str  # one line: what was wrong and what to do
    type: str  # "invalid_request_error" | "authentication_error" | "permission_error" | "rate_limit_error" | ...
    param: str | None  # the request field at fault, when there is one
    code: str | None  # a stable name for the error, e.g. "queue_full"


class ErrorBody(BaseModel):
    error: ErrorDetail


_REFUSALS = {
    400: "the request cannot be served as sent (the message says what to change)",
    401: "the API key is missing or wrong",
    403: "the session belongs to another client",
    404: "no such model, session or endpoint",
    408: "the request did not arrive in time",
    413: "the request body is too large",
    429: "the server is busy; retry after the Retry-After header's seconds",
    500: "a fault of the server (details in its log)",
}
ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorBody, "description": description} for status, description in _REFUSALS.items()
}


def error_body(
    message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _is_union_tag(part: object) -> bool:
    """pydantic names the member of a union it tried in the error location ('str', 'list[int]')."""
    return isinstance(part, str) and (part in {"str", "int", "float", "bool", "dict"} or "[" in part)


def _param(error: dict) -> str | None:
    return ".".join(str(part) for part in error.get("loc", ()) if part != "body" and not _is_union_tag(part)) or None


def validation_message(errors: list[dict]) -> tuple[str, str | None]:
    """One line from pydantic's errors: 'top_p: input should be less than or equal to 1, got 1.5'."""
    error = errors[0]
    param = _param(error)
    same_field = [e for e in errors if param and (_param(e) or "").startswith(param)]
    if len(same_field) > 1:  # a union: every member failed
        deepest = max(errors, key=lambda e: len(e.get("loc", ())))
        if len(deepest.get("loc", ())) > len(error.get("loc", ())):
            return validation_message([deepest])
        kinds = " or ".join(str(e["loc"][-1]) for e in same_field if _is_union_tag(e["loc"][-1]))
        return f"{param}: expected {kinds}, got {json.dumps(error.get('input'), default=str)[:80]}", param
    if param is None and error.get("type") in ("model_attributes_type", "dict_type"):
        got = error.get("input")
        if isinstance(got, (bytes, str)):
            return "the request body must be a JSON object sent with 'Content-Type: application/json'", None
        return f"the request body must be a JSON object, got {type(got).__name__}", None
    if error.get("type") == "json_invalid":
        return (
            f"the request body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')}): send a JSON object",
            None,
        )
    if error.get("type") == "extra_forbidden":
        name = str(error.get("loc", ("",))[-1])
        return f"unrecognized request argument {name!r}: remove it (see the README for supported fields)", param
    if error.get("type") == "decodelab_setting":  # a sampler setting's own sentence (server/setting_fields.py)
        return str(error.get("msg")), param
    if error.get("type") == "missing":
        if param is None:
            return "the request body is missing: send a JSON object with 'Content-Type: application/json'", None
        return f"{param} is required", param
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    got = error.get("input")
    suffix = "" if isinstance(got, dict) or got is None else f", got {json.dumps(got, default=str)[:80]}"
    return f"{param}: {message[0].lower() + message[1:]}{suffix}" if param else f"{message}{suffix}", param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        message, param = validation_message(list(error.errors()))
        return JSONResponse(error_body(message, param=param), status_code=400)

    @app.exception_handler(BadInput)
    @app.exception_handler(Unsupported)
    async def bad_input(request: Request, error: BadInput | Unsupported) -> JSONResponse:
        return JSONResponse(error_body(str(error)), status_code=400)

    @app.exception_handler(ModelNotFound)
    async def no_model(request: Request, error: ModelNotFound) -> JSONResponse:
        return JSONResponse(error_body(str(error), code="model_not_found"), status_code=404)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        kind = "invalid_request_error" if error.status_code < 500 else "server_error"
        message = error.detail if isinstance(error.detail, str) else "request failed"
        if error.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        return JSONResponse(
            error_body(message, kind), status_code=error.status_code, headers=getattr(error, "headers", None)
        )  # 405 says which methods are allowed

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=error)
        return JSONResponse(error_body(INTERNAL_ERROR, "server_error"), status_code=500)


def in_band_error(error: Exception) -> dict:
    """The error frame of a stream whose 200 is already sent: a user mistake says what it was; anything
    else is logged and reported generically, as a 500 would be."""
    if isinstance(error, BadInput | Unsupported | APIError):
        return error_body(str(error), "invalid_request_error")
    log.error("internal error in a stream", exc_info=error)
    return error_body(INTERNAL_ERROR, "server_error")
