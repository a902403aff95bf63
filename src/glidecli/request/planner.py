"""A request becomes a RenderPlan: its jobs and the render that makes them, every option
checked against the manifest before any model loads. The CLI runs a plan in its own
process; the server runs it on a warm Session. Both give the same pictures for the same
request and seed.

    plan = plan_request(GenerateRequest(prompts=("a corgi",), seed=1), load_manifest())
    for done in plan.render(session, plan.jobs, reporter, {"command": plan.command}): ...
"""

from __future__ import annotations

from typing import Any

from ..files.manifest import Manifest
from . import edits, text, unclip
from .plan import RenderPlan

PLANNERS = {
    "generate": text.plan_generate,
    "clip-guide": text.plan_clip_guide,
    "upsample": edits.plan_upsample,
    "inpaint": edits.plan_inpaint,
    "outpaint": edits.plan_outpaint,
    "unclip": unclip.plan_unclip,
    "vary": unclip.plan_vary,
    "blend": unclip.plan_blend,
}


def plan_request(request: Any, manifest: Manifest, shard: str | None = None) -> RenderPlan:
    """The plan of any rendering request (commands.REQUESTS); `shard` is the CLI's --shard."""
    return PLANNERS[request.command](request, manifest, shard)
