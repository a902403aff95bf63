"""A1111's reading routes (/sdapi/v1): what its clients list when they connect (models,
samplers, upscalers, scripts...), progress, interrupt and options. Each answers A1111's
shape with what is true here: an empty list where nothing applies."""

from __future__ import annotations

import time

from fastapi import APIRouter

from ..diffusion.vocabulary import SAMPLER_NAMES
from ..nets.kinds import ModelKind
from ..render.defaults import UPSAMPLE_FACTOR
from ..request.a1111 import A1111_SAMPLERS
from .a1111 import A1111_API, current_models
from .a1111_models import (
    CmdFlags,
    Embeddings,
    Empty,
    Lora,
    NamedItem,
    Options,
    OptionsBody,
    Progress,
    PromptStyle,
    Sampler,
    Scheduler,
    ScriptInfo,
    ScriptsList,
    SdModel,
    SdModule,
    SdVae,
    Upscaler,
)
from .dependencies import ServiceDep
from .models import upscaler_rows

router = APIRouter(prefix=A1111_API, tags=["automatic1111"])


@router.get("/progress")
def progress(service: ServiceDep) -> Progress:
    running = service.queue.running()
    job = running[0] if running else None
    fraction, eta = 0.0, 0.0
    if job is not None:
        count = max(1, len(job.plan.jobs))
        step = job.step / job.total if job.total else 0.0
        fraction = min(0.99, (job.images_done + step) / count)
        elapsed = time.time() - job.created
        eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
    state = {"skipped": False, "interrupted": bool(job and job.cancel_requested.is_set()), "stopping_generation": False,
             "job": job.id if job else "", "job_count": len(running) + service.queue.waiting(),
             "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.created)) if job else "0",
             "job_no": job.images_done if job else 0, "sampling_step": job.step if job else 0, "sampling_steps": job.total if job else 0}
    return Progress(progress=round(fraction, 4), eta_relative=round(eta, 2), state=state, textinfo=job.stage if job else None)


@router.post("/interrupt")
def interrupt(service: ServiceDep) -> Empty:
    """Stop the running jobs at their next step; their finished pictures are kept and returned."""
    for job in service.queue.running():
        service.queue.cancel(job, keep_finished=True)
    return Empty()


@router.post("/skip")
def skip(service: ServiceDep) -> Empty:
    return interrupt(service)


@router.get("/sd-models")
def sd_models(service: ServiceDep) -> list[SdModel]:
    return [SdModel(title=entry.name, model_name=entry.name, hash=(entry.sha256 or "")[:10] or None, sha256=entry.sha256,
                    filename=entry.name) for entry in service.manifest.models_of_kind(ModelKind.BASE)]


@router.get("/samplers")
def samplers() -> list[Sampler]:
    return [Sampler(name=name, aliases=sorted(k for k, v in A1111_SAMPLERS.items() if v == name and k != name), options={}) for name in SAMPLER_NAMES]


@router.get("/schedulers")
def schedulers() -> list[Scheduler]:
    return [Scheduler(name="automatic", label="Automatic (the model's own schedule)")]


@router.get("/options")
def get_options(service: ServiceDep) -> Options:
    model, _ = current_models(service, service.checkpoint, ModelKind.BASE)
    roles = {role: row["model"] for role, row in service.manifest.roles().describe().items() if row["present"]}
    return Options(sd_model_checkpoint=model, samples_format="png", outdir_samples=str(service.out), glide_roles=roles)


@router.post("/options")
def set_options(body: OptionsBody, service: ServiceDep) -> Empty:
    """Clients switch models through sd_model_checkpoint; other settings mean nothing here."""
    checkpoint = body.sd_model_checkpoint
    if checkpoint is not None:
        current_models(service, str(checkpoint), ModelKind.BASE)  # refuses names that are no base model
        service.checkpoint = str(checkpoint)
    return Empty()


@router.get("/sd-vae")
def sd_vae() -> list[SdVae]:
    return []


@router.get("/loras")
def loras(service: ServiceDep) -> list[Lora]:
    """The manifest's LoRA adapters, as A1111 lists them; a prompt selects one with <lora:NAME:WEIGHT>."""
    return [Lora(name=entry.name, alias=entry.name, path=str(entry.source)) for entry in service.manifest.models_of_kind(ModelKind.LORA)]


@router.get("/upscalers")
def upscalers(service: ServiceDep) -> list[Upscaler]:
    """"None" first, as A1111 lists it, then the manifest's upsamplers (GLIDE's, unCLIP's SR)."""
    rows = [Upscaler(name="None", model_name=None, model_path=None, model_url=None, scale=None)]
    for name, _, _ in upscaler_rows(service.manifest):  # GLIDE's upsamplers and Karlo's SR alike: 4x
        rows.append(Upscaler(name=name, model_name=name, model_path=None, model_url=None, scale=UPSAMPLE_FACTOR))
    return rows


@router.get("/latent-upscale-modes")
def latent_upscale_modes() -> list[NamedItem]:
    return []  # glide's models work on pixels: there are no latents to upscale


@router.get("/sd-modules")
def sd_modules() -> list[SdModule]:
    return []  # no separate text encoders or VAEs to choose


@router.get("/scripts")
def scripts() -> ScriptsList:
    return ScriptsList()


@router.get("/script-info")
def script_info() -> list[ScriptInfo]:
    return []


@router.get("/embeddings")
def embeddings() -> Embeddings:
    return Embeddings()


@router.get("/prompt-styles")
def prompt_styles() -> list[PromptStyle]:
    return []


@router.get("/cmd-flags")
def cmd_flags(service: ServiceDep) -> CmdFlags:
    config = service.config
    return CmdFlags(host=config.host, port=config.port, device=config.device, devices=config.devices, dtype=config.dtype,
                    offload=config.offload, compile=config.compile, offline=config.offline, max_queue=config.max_queue,
                    max_images=config.max_images, max_steps=config.max_steps, keep_jobs=config.keep_jobs,
                    api_auth=config.token is not None, weights=str(config.weights) if config.weights else None)

