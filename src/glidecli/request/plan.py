"""What a request becomes (planner.py): its jobs and the render that makes them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..files.manifest import Manifest
from ..files.vocabulary import DEFAULT_QUALITY, ImageFormat

if TYPE_CHECKING:
    from ..render.jobs import Job, RenderedImage, RenderOptions
    from ..render.session import Reporter, Session

RenderFn = Callable[["Session", list["Job"], "RenderOptions"], Iterator["RenderedImage"]]


@dataclass(kw_only=True)
class RenderPlan:
    """What a request renders: `render(session, jobs, options)` yields one picture per job of
    `jobs` (or of a part of them), `batch_size` pictures at a time (`run` gives the options).
    `warnings` are settings that may give poor pictures, for the user to see. `animations`
    groups jobs (their indexes, in order) whose pictures also make one animated `animate`
    file; `show_steps` asks for every N-th step's clean-image estimate as frames.
    `image_format` and `quality` are the request's --format (None: the front end picks,
    files/pictures.output_format) and --quality of the files written."""

    command: str
    manifest: Manifest
    jobs: list[Job]
    render: RenderFn
    batch_size: int | str = 1
    warnings: list[str] = field(default_factory=list)
    animate: str | None = None
    animations: list[tuple[int, ...]] = field(default_factory=list)
    show_steps: int | None = None
    image_format: ImageFormat | None = None
    quality: int = DEFAULT_QUALITY

    def run(self, session: Session, jobs: list[Job], reporter: Reporter) -> Iterator[RenderedImage]:
        """The pictures of `jobs`, each recording the command's name; `reporter` hears the progress."""
        from ..render.jobs import RenderOptions

        return self.render(session, jobs, RenderOptions(batch_size=self.batch_size, reporter=reporter, extra_meta={"command": self.command}))
