"""The server's per-request caps and lifetimes, torch- and FastAPI-free (the CLI's flags
show them as defaults)."""

from __future__ import annotations

MAX_IMAGES = 16  # pictures one request may ask for (--max-images)
MAX_STEPS = 1000  # sampling steps one stage may take (--max-steps)
KEEP_JOBS_MINUTES = 60.0  # how long a finished job (and its events) stays readable (--keep-jobs)
