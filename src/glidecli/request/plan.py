"""What a request becomes (planner.py): its jobs and the render that makes them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..files.manifest import Manifest

if TYPE_CHECKING:
    from ..render.engine import Job, RenderedImage, Reporter, Session

RenderFn = Callable[["Session", list["Job"], "Reporter", dict[str, Any]], Iterator["RenderedImage"]]


@dataclass(kw_only=True)
class RenderPlan:
    """What a request renders: `render(session, jobs, reporter, meta)` yields one picture per
    job of `jobs` (or of a part of them); `meta` is recorded in every PNG (the command's name).
    `warnings` are settings that may give poor pictures, for the user to see. `animations`
    groups jobs (their indexes, in order) whose pictures also make one animated `animate`
    file; `show_steps` asks for every N-th step's clean-image estimate as frames."""

    command: str
    manifest: Manifest
    jobs: list[Job]
    render: RenderFn
    warnings: list[str] = field(default_factory=list)
    animate: str | None = None
    animations: list[tuple[int, ...]] = field(default_factory=list)
    show_steps: int | None = None
