"""What FastAPI hands the routes (its dependency injection): the app's one Service.

    @router.get("/health")
    def health(service: ServiceDep) -> dict[str, Any]: ...
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .service import Service


def get_service(request: Request) -> Service:
    """The Service that create_app put in the app's state."""
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]
