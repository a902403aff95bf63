"""The FastAPI application of `glide serve`: the three APIs' routers, the page, and the
guard in front of them (security.py). Routes stay thin; service.py does the work.

    app = create_app(Service(ServerConfig(out=Path("outputs"))))
    uvicorn.run(app, host="127.0.0.1", port=7860)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from .. import __version__
from . import a1111, a1111_extras, a1111_lists, native, openai_images, openai_output
from .body import BodyLimit, body_cap
from .native_models import JOB_REQUEST
from .openai_models import EditFields, VariationFields
from .security import Guard
from .service import ClientError, Service


def create_app(service: Service, routes: Sequence[BaseRoute] = (),
               lifespans: Sequence[Callable[[], AbstractAsyncContextManager[None]]] = ()) -> ASGIApp:
    """The app; `routes` are another front end's (the MCP endpoint), each of `lifespans` runs
    around the app's life (theirs), all behind the same Guard."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as running:
            for each in lifespans:
                await running.enter_async_context(each())
            yield
        service.close()  # the queue's workers stop; the uploads folder goes

    app = FastAPI(title="glide serve", version=__version__, docs_url="/docs", redoc_url=None, lifespan=lifespan)
    app.state.service = service
    app.add_middleware(BodyLimit, cap=body_cap(service.config.limits))
    app.include_router(native.router)
    app.include_router(a1111.router)
    app.include_router(a1111_lists.router)
    app.include_router(a1111_extras.router)
    app.include_router(openai_images.router)
    app.include_router(openai_output.models_router)
    app.router.routes.extend(routes)
    static = resources.files("glidecli.serve") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(static / "index.html"), headers={"Cache-Control": "no-cache"})

    @app.exception_handler(ClientError)
    async def client_error(_: Request, error: ClientError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        if first.get("type") == "extra_forbidden":
            return JSONResponse({"detail": f"unknown field {where!r}"}, status_code=422)
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid request')}".strip(": ")}, status_code=422)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return Guard(app, service.config.host, service.config.token)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with the native API's job bodies (read by hand, JSON or multipart) in
    its components."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        job = JOB_REQUEST.json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(job.pop("$defs", {}))
        components["JobRequest"] = job
        for form in (EditFields, VariationFields):  # the multipart bodies' text fields
            components[form.__name__] = form.model_json_schema(ref_template="#/components/schemas/{model}")
        app.openapi_schema = schema
    return app.openapi_schema
