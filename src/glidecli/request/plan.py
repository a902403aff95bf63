"""What a request becomes (planner.py): its jobs and the render that makes them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..files.manifest import Manifest
from ..files.vocabulary import DEFAULT_QUALITY, ImageFormat

if TYPE_CHECKING:
    from ..render.adapters import AdapterUse
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
    adapters: tuple[AdapterUse, ...] = ()  # --lora: what the session's networks wear for this plan
    force_adapters: bool = False  # --force put some on a model they were not recorded for (replay needs it too)

    def run(self, session: Session, jobs: list[Job], reporter: Reporter) -> Iterator[RenderedImage]:
        """The pictures of `jobs`, each recording the command's name (and its adapters);
        `reporter` hears the progress. The session's networks wear this plan's adapters, and
        only those, from now on."""
        from ..render.adapters import adapter_records
        from ..render.jobs import RenderOptions

        session.use_adapters(self.adapters)
        extra_meta: dict[str, object] = {"command": self.command}
        if self.adapters:
            extra_meta["lora"] = adapter_records(self.adapters)
        if self.force_adapters:
            extra_meta["force"] = True
        return self.render(session, jobs, RenderOptions(batch_size=self.batch_size, reporter=reporter, extra_meta=extra_meta))
