"""AUTOMATIC1111's API bodies and answers (/sdapi/v1), by its published field lists, with its
types and defaults: what its clients send and read. Fields A1111 itself does not know are
accepted and ignored (listed in the answer's info as `ignored_fields`), as before; a1111.py
says which known fields glide honours, ignores or refuses."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class A1111Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class GenerationFields(A1111Body):
    """What txt2img and img2img share (A1111's StableDiffusionProcessing)."""

    prompt: str = ""
    negative_prompt: str | None = ""
    styles: list[str] | None = None
    seed: int = Field(-1, description="-1: a random seed.")
    subseed: int = -1
    subseed_strength: float = 0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = Field(None, description="A1111's sampler name; mapped to the nearest glide sampler (GET /samplers).")
    sampler_index: str | None = "Euler"
    scheduler: str | None = None
    batch_size: int = Field(1, description="Pictures per batch; batch_size x n_iter pictures in all (at most --max-images).")
    n_iter: int = 1
    steps: int = Field(50, description="Base sampling steps; 50 (A1111's default) means glide's own default.")
    cfg_scale: float = Field(7.0, description="Guidance scale; 7 (A1111's default) means glide's own default.")
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = Field(None, description="Only sd_model_checkpoint means something here.")
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None
    force_task_id: str | None = None
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    infotext: str | None = None


class Txt2ImgRequest(GenerationFields):
    enable_hr: bool = Field(False, description="Hires fix: glide's upsampler stage, at its own scale (GET /upscalers).")
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = Field(0, description="The upsampler's steps (0: its default).")
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""


class Img2ImgRequest(GenerationFields):
    init_images: list[str] | None = Field(None, description="One base64 picture.")
    resize_mode: int = Field(0, description="0 stretch, 1 crop, 2 pad.")
    image_cfg_scale: float | None = None
    mask: str | None = Field(None, description="A base64 mask, white where to repaint: the request becomes an inpaint.")
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = False


class ImagesResponse(BaseModel):
    images: list[str] = Field(description="The pictures, base64 PNGs.")
    parameters: dict[str, Any] = Field(description="The request as received.")
    info: str = Field(description="JSON text: A1111's generation info (seed, all_seeds, infotexts...).")


class Progress(BaseModel):
    progress: float
    eta_relative: float
    state: dict[str, Any]
    current_image: str | None = None
    textinfo: str | None = None


class OptionsBody(A1111Body):
    """POST /options: only the checkpoint means something here; other settings are ignored."""

    sd_model_checkpoint: str | None = None


class Options(A1111Body):
    sd_model_checkpoint: str = Field(description="The base model the A1111 routes use.")
    glide_roles: dict[str, str] = Field(default_factory=dict, description="glide's choice of model for each role (base, upsample, inpaint...).")
    samples_format: str = "png"
    outdir_samples: str = Field(description="Where pictures go (--out).")


class SdModel(BaseModel):
    title: str
    model_name: str
    hash: str | None
    sha256: str | None
    filename: str
    config: str | None = None


class Sampler(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, str]


class Scheduler(BaseModel):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float | None = None
    need_inner_model: bool | None = None


class Upscaler(BaseModel):
    name: str
    model_name: str | None = None
    model_path: str | None = None
    model_url: str | None = None
    scale: float | None = Field(None, description="How many times larger it makes a picture.")


class NamedItem(BaseModel):
    name: str


class SdModule(BaseModel):
    model_name: str
    filename: str | None = None


class ScriptsList(BaseModel):
    txt2img: list[str] = Field(default_factory=list)
    img2img: list[str] = Field(default_factory=list)


class Embeddings(BaseModel):
    loaded: dict[str, Any] = Field(default_factory=dict)
    skipped: dict[str, Any] = Field(default_factory=dict)


class ExtrasOptions(A1111Body):
    resize_mode: int = 0
    show_extras_results: bool = True
    gfpgan_visibility: float = 0
    codeformer_visibility: float = 0
    codeformer_weight: float = 0
    upscaling_resize: float = Field(2, description="How many times larger (resize_mode 0): glide's upsampler makes 4x its input, then Lanczos resizes to this.")
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = Field("None", description="The upsampler (GET /upscalers); None: the manifest's default upsampler.")
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0
    upscale_first: bool = False
    prompt: str | None = Field(None, description="glide's upsampler is text-conditioned: the caption (else the picture's recorded prompt).")


class ExtraSingleImageRequest(ExtrasOptions):
    image: str = Field("", description="A base64 picture.")


class FileData(BaseModel):
    data: str
    name: str = ""


class ExtraBatchImagesRequest(ExtrasOptions):
    imageList: list[FileData] = Field(description="base64 pictures.")  # noqa: N815 - A1111's field name


class ExtraSingleImageResponse(BaseModel):
    html_info: str
    image: str


class ExtraBatchImagesResponse(BaseModel):
    html_info: str
    images: list[str]


class PngInfoRequest(BaseModel):
    image: str = Field(description="A base64 picture.")


class PngInfoResponse(BaseModel):
    info: str = Field(description="The picture's settings as A1111's parameters text.")
    items: dict[str, Any] = Field(description="Each recorded setting, by name.")
    parameters: dict[str, Any] = Field(default_factory=dict, description="A1111's parsed parameters.")


class InterrogateRequest(BaseModel):
    image: str = Field(description="A base64 picture.")
    model: str = Field("clip", description="clip: rank captions with the manifest's CLIP (docs/serving.md says which).")


class InterrogateResponse(BaseModel):
    caption: str


class Empty(BaseModel):
    """A1111's answer where there is nothing to say."""


class SdVae(BaseModel):
    model_name: str
    filename: str


class Lora(BaseModel):
    name: str
    alias: str
    path: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class ScriptInfo(BaseModel):
    name: str
    is_alwayson: bool
    is_img2img: bool
    args: list[dict[str, Any]]


class PromptStyle(BaseModel):
    name: str
    prompt: str
    negative_prompt: str


class CmdFlags(BaseModel):
    """The server's own settings (A1111 answers its command line's flags)."""

    host: str
    port: int
    device: str
    devices: str | None
    dtype: str
    offload: str
    compile: bool
    offline: bool
    max_queue: int
    max_images: int
    max_steps: int
    keep_jobs: float = Field(description="Minutes a finished job stays readable.")
    api_auth: bool = Field(description="Whether a token guards the API.")
    weights: str | None = Field(description="The manifest (--weights); null: the packaged one.")
