"""A request becomes a RenderPlan: its jobs and the render that makes them, every option
checked against the manifest before any model loads. The CLI runs a plan in its own
process; the server runs it on a warm Session. Both give the same pictures for the same
request and seed.

    plan = plan_request(GenerateRequest(prompts=("a corgi",), seed=1), load_manifest())
    for done in plan.run(session, plan.jobs, reporter): ...
"""

from __future__ import annotations

from typing import assert_never

from ..files.manifest import Manifest
from ..files.vocabulary import ImageFormat
from . import edits, text, unclip
from .commands import (
    BlendRequest,
    ClipGuideRequest,
    GenerateRequest,
    InpaintRequest,
    OutpaintRequest,
    Request,
    UnclipRequest,
    UpsampleRequest,
    VaryRequest,
    with_roles,
)
from .lora import resolve_adapters
from .plan import RenderPlan


def plan_request(request: Request, manifest: Manifest, shard: str | None = None, *, adapter_paths: bool = True) -> RenderPlan:
    """The plan of any rendering request (commands.REQUESTS); `shard` is the CLI's --shard.
    The files' format and quality are every request's (commands.Output); the models the
    request leaves unnamed are the manifest's for their roles. Its `--lora` adapters are found
    and checked against the models it runs: manifest names, and with `adapter_paths` (the
    CLI's, not the server's) folders of this machine."""
    request = with_roles(request, manifest.roles())
    plan = _plan_command(request, manifest, shard)
    plan.image_format = None if request.format is None else ImageFormat(request.format)
    plan.quality = request.quality
    plan.adapters = resolve_adapters(request, manifest, adapter_paths)
    plan.force_adapters = request.force and bool(plan.adapters)
    return plan


def _plan_command(request: Request, manifest: Manifest, shard: str | None) -> RenderPlan:
    match request:
        case GenerateRequest():
            return text.plan_generate(request, manifest, shard)
        case ClipGuideRequest():
            return text.plan_clip_guide(request, manifest, shard)
        case UpsampleRequest():
            return edits.plan_upsample(request, manifest, shard)
        case InpaintRequest():
            return edits.plan_inpaint(request, manifest, shard)
        case OutpaintRequest():
            return edits.plan_outpaint(request, manifest, shard)
        case UnclipRequest():
            return unclip.plan_unclip(request, manifest, shard)
        case VaryRequest():
            return unclip.plan_vary(request, manifest, shard)
        case BlendRequest():
            return unclip.plan_blend(request, manifest, shard)
        case _:
            assert_never(request)
