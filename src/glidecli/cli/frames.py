"""Frames beside the pictures a command writes: a picture's sampling steps (--show-steps) and
animations of a seed walk's or a blend's frames (--animate)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

    from ..diffusion.samplers import StepInfo
    from ..render.session import Reporter
    from ..request.plan import RenderPlan
else:
    Reporter = object  # render.session loads torch, which the CLI leaves until it renders


class StepFrames(Reporter):
    """A render.Reporter in front of another: it also keeps every `every`-th step's clean-image
    estimate (and each stage's last) of the picture being sampled, until `take()`. The
    command samples one picture at a time when it asks for them."""

    def __init__(self, reporter: Any, every: int):
        self.reporter, self.every = reporter, every
        self._frames: list[tuple[str, int, Image.Image]] = []

    def warn(self, message: str) -> None:
        self.reporter.warn(message)

    def step(self, stage: str, info: StepInfo) -> None:
        self.reporter.step(stage, info)
        if info.index % self.every == 0 or info.index == info.total:
            from ..files.images import tensor_to_pil

            self._frames.append((stage, info.index, tensor_to_pil(info.x0[0].float().clamp(-1, 1))))

    def image_done(self) -> None:
        self.reporter.image_done()

    def take(self) -> list[tuple[str, int, Image.Image]]:
        frames, self._frames = self._frames, []
        return frames


def write_step_frames(picture: Path, final: Image.Image, frames: list, kind: str, meta: dict, overwrite: bool) -> None:
    """A picture's steps as PNGs in PICTURE-steps/ (`03-base-020.png`) and the same frames as
    one animation PICTURE-steps.gif (or .webp), each at the picture's size."""
    from PIL import Image

    from ..files.animation import write_animation
    from ..files.pngfile import write_png

    folder = picture.with_name(picture.stem + "-steps")
    for number, (stage, step, image) in enumerate(frames):
        record = {"command": meta.get("command"), "prompt": meta.get("prompt"), "seed": meta.get("seed"), "stage": stage, "step": step,
                  "of": picture.name}
        write_png(image, folder / f"{number:02d}-{stage}-{step:03d}.png", record, overwrite=overwrite)
    size = final.size
    write_animation([image.resize(size, Image.Resampling.NEAREST) for _, _, image in frames], picture.with_name(f"{picture.stem}-steps.{kind}"), kind, overwrite=overwrite)


def write_animations(plan: RenderPlan, paths: dict[int, Path], written: set[int], overwrite: bool, note: Any) -> list[Path]:
    """One animation per group of frames whose files this run wrote, beside its first frame;
    none without --animate (the frames alone were asked for)."""
    from PIL import Image

    from ..files.animation import animation_path, write_animation

    made: list[Path] = []
    if plan.animate is None:
        return made
    for group in plan.animations:
        if not all(index in written for index in group):
            note(f"not every frame of {paths.get(group[0], 'a sequence')} was made in this run: no animation for it")
            continue
        frames = []
        for index in group:
            with Image.open(paths[index]) as frame:
                frames.append(frame.convert("RGB"))
        made.append(write_animation(frames, animation_path(paths[group[0]], plan.animate), plan.animate, overwrite=overwrite))
    return made
