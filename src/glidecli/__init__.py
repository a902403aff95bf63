"""glidecli: text-to-image generation and editing with OpenAI's GLIDE models.

The package is built in wings, each importing only the wings below it:

    cli        the `glide` command: one module per command group, main.py holds the app
    serve      `glide serve`: the HTTP APIs (native, A1111, OpenAI images), the job queue, the page
    request    the typed requests of the rendering commands, shared by cli and serve, and their plans
    train      the training loop, its data and run state, the shapes data set
    render     prompt -> picture: the Session that loads models, the sampling of each stage
    files      the weights manifest, fetching and caching, pictures in, PNG/JPEG/WebP with metadata out
    diffusion  schedules, samplers, guidance, per-image noise, losses (no network in sight)
    nets       the networks, their configs, checkpoints and tokenizers

The names below are the Python API (`from glidecli import Session, Job, render_generate`).
They load lazily, so `import glidecli` (and `glide --help`) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> the module that defines it
_API = {
    "Session": "glidecli.render.session",
    "Reporter": "glidecli.render.session",
    "Job": "glidecli.render.jobs",
    "Emphasis": "glidecli.render.prompt_syntax",
    "Stage": "glidecli.render.jobs",
    "ClipSteering": "glidecli.render.engine",
    "InpaintSource": "glidecli.render.inpaint",
    "RenderedImage": "glidecli.render.jobs",
    "RenderOptions": "glidecli.render.jobs",
    "InitImage": "glidecli.render.img2img",
    "BestOf": "glidecli.render.ranking",
    "render_generate": "glidecli.render.engine",
    "render_upsample": "glidecli.render.engine",
    "render_inpaint": "glidecli.render.inpaint",
    "render_inpaint_region": "glidecli.render.region_inpaint",
    "RegionSource": "glidecli.render.region_inpaint",
    "render_outpaint": "glidecli.render.outpaint",
    "OutpaintSource": "glidecli.render.outpaint",
    "Extension": "glidecli.render.regions",
    "SamplerChoice": "glidecli.render.pipeline",
    "render_unclip": "glidecli.render.unclip",
    "render_vary": "glidecli.render.unclip",
    "render_blend": "glidecli.render.unclip",
    "BlendJob": "glidecli.render.jobs",
    "VaryJob": "glidecli.render.jobs",
    "TextDiff": "glidecli.render.unclip_edits",
    "ClipModels": "glidecli.render.unclip",
    "load_manifest": "glidecli.files.manifest",
    "write_png": "glidecli.files.pngfile",
    "write_picture": "glidecli.files.pictures",
    "encode_picture": "glidecli.files.pictures",
    "read_picture_record": "glidecli.files.pictures",
    "ImageFormat": "glidecli.files.vocabulary",
    "ManifestError": "glidecli.files.manifest",
    "WeightsError": "glidecli.files.weights_error",
    "ImageError": "glidecli.files.pngfile",
    "CheckpointError": "glidecli.nets.checkpoint",
    "TokenizerFileError": "glidecli.nets.tokenizer",
    "RenderError": "glidecli.render.session",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'glidecli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
