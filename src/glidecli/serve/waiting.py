"""Waiting on a job for a synchronous HTTP request (A1111's txt2img, OpenAI's generations):
a client that goes away cancels its job at its next sampling step, so nothing renders for
nobody and no file is left."""

from __future__ import annotations

import asyncio

from fastapi import Request

from .jobs import Job
from .service import Service

POLL_SECONDS = 0.05
DISCONNECT_CHECK_SECONDS = 0.25


async def wait_for(service: Service, job: Job, request: Request) -> None:
    """Until `job` has finished; if the client disconnects first, cancel it and wait for that."""
    checked = 0.0
    while not job.finished:
        await asyncio.sleep(POLL_SECONDS)
        checked += POLL_SECONDS
        if checked >= DISCONNECT_CHECK_SECONDS:
            checked = 0.0
            if await request.is_disconnected():
                service.queue.cancel(job)
                while not job.finished:
                    await asyncio.sleep(POLL_SECONDS)
                return
