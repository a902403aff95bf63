"""What a request becomes (planner.py): its jobs and the render that makes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..files.manifest import Manifest

if TYPE_CHECKING:
    from ..render.engine import Job, RenderedImage, Reporter, Session

RenderFn = Callable[["Session", list["Job"], "Reporter", dict[str, Any]], Iterator["RenderedImage"]]


@dataclass
class RenderPlan:
    """What a request renders: `render(session, jobs, reporter, meta)` yields one picture per
    job of `jobs` (or of a part of them); `meta` is recorded in every PNG (the command's name).
    `warnings` are settings that may give poor pictures, for the user to see."""

    command: str
    manifest: Manifest
    jobs: list["Job"]
    render: RenderFn
    warnings: list[str] = field(default_factory=list)
