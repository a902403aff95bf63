"""Request bodies read within the upload limit: a JSON object, or multipart form fields and
files (bytes), never more than the limit allows in memory."""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .service import ClientError
from .uploads import UploadLimits

MAX_FIELDS = 200


def body_cap(limits: UploadLimits) -> int:
    """A body may hold a few pictures as base64 (4/3 of their bytes) beside its options."""
    return 3 * (limits.max_bytes * 4 // 3) + 2**20


async def read_bytes(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise ClientError(f"the request body is {declared} bytes; the limit is {cap}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise ClientError(f"the request body is larger than the limit of {cap} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limits: UploadLimits) -> dict[str, Any]:
    data = await read_bytes(request, body_cap(limits))
    try:
        body = json.loads(data or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ClientError(f"the body is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise ClientError("the body must be a JSON object")
    return body


async def read_multipart(request: Request, limits: UploadLimits, repeatable: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Form fields (text) and files (their bytes) of a multipart body. A file field of
    `repeatable` may come several times: 'image[]', 'image[]#2', ..."""
    declared = request.headers.get("content-length")
    cap = body_cap(limits)
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise ClientError(f"the request body is {declared} bytes; the limit is {cap}", 413)
    try:
        form = await request.form(max_files=8, max_fields=MAX_FIELDS)
    except Exception as error:  # noqa: BLE001 - starlette's parser says what is wrong
        raise ClientError(f"cannot read the form: {' '.join(str(error).split())[:200]}") from None
    fields: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    try:
        for key, value in form.multi_items():
            if key in repeatable and key in files:
                key = f"{key}#{sum(1 for name in files if name.startswith(key)) + 1}"
            if key in fields or key in files:
                raise ClientError(f"field {key!r} is given twice")
            if isinstance(value, UploadFile):
                data = await value.read(limits.max_bytes + 1)
                if len(data) > limits.max_bytes:
                    raise ClientError(f"picture {key!r} is larger than the upload limit of {limits.max_bytes} bytes", 413)
                files[key] = data
            else:
                fields[key] = value
    finally:
        await form.close()
    return fields, files


class BodyLimit:
    """ASGI middleware: a request body past `cap` bytes is refused with 413 (declared, at
    once; streamed, when the route reads past it), so routes that take typed bodies through
    FastAPI hold no more in memory than the routes that read bodies themselves."""

    def __init__(self, app: ASGIApp, cap: int) -> None:
        self.app, self.cap = app, cap

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.cap:
            await JSONResponse({"detail": f"the request body is {int(declared)} bytes; the limit is {self.cap}"}, 413)(scope, receive, send)
            return
        size = 0

        async def counted() -> Message:
            nonlocal size
            message = await receive()
            size += len(message.get("body", b""))
            if size > self.cap:
                # FastAPI passes an HTTPException raised while it reads a body on as it is.
                raise HTTPException(413, f"the request body is larger than the limit of {self.cap} bytes")
            return message

        await self.app(scope, counted, send)
