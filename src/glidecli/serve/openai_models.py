"""OpenAI's images API bodies and answers (/v1/images, /v1/models), by its published field
lists: what openai-python and the front ends that use it send and read. Fields OpenAI knows
that mean nothing here are accepted and ignored; fields it does not know are refused, as
OpenAI refuses them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

OutputFormat = Literal["png", "jpeg", "webp"]
# OpenAI's own fields that change nothing here (its quality tiers, moderation, styles, users...).
IGNORED_FIELDS = ("quality", "style", "user", "moderation", "input_fidelity", "safety_identifier", "complexity", "effort")


class ImageOptions(BaseModel):
    """What generations, edits and variations share."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="A manifest entry; OpenAI's names (dall-e-2, gpt-image-1...) mean the server's default.")
    n: int = Field(1, ge=1, le=10, description="How many pictures (at most --max-images).")
    size: str | None = Field(None, description="WIDTHxHEIGHT, or auto (the model's own size); 1024x1024 means auto too.")
    response_format: Literal["b64_json", "url"] | None = Field(None, description="b64_json (default) or url (served by /glide/v1/images).")
    output_format: OutputFormat | None = Field(None, description="png (default), jpeg or webp; the settings travel with the picture in each.")
    output_compression: int | None = Field(None, ge=0, le=100, description="jpeg and webp quality, 0-100 (default 100; webp 100: lossless).")
    background: Literal["auto", "opaque", "transparent"] | None = Field(None, description="auto or opaque: glide's pictures are opaque.")
    stream: bool = Field(False, description="Server-sent events: partial_images previews, then image_generation.completed.")
    partial_images: int = Field(0, ge=0, le=3, description="Previews (from the sampler's clean-image estimate) while streaming.")
    quality: str | None = None
    style: str | None = None
    user: str | None = None
    moderation: str | None = None
    input_fidelity: str | None = None
    safety_identifier: str | None = None
    complexity: str | None = None
    effort: str | None = None


class GenerationRequest(ImageOptions):
    prompt: str = Field(description="What to draw.")


class EditFields(ImageOptions):
    """An edit's text fields (multipart; the pictures come as files: image or image[], mask)."""

    prompt: str = Field(description="What the edited picture shows.")
    strength: float | None = Field(None, gt=0, le=1, description="Without a mask: how much to redraw (img2img; glide's field, not OpenAI's).")


class VariationFields(ImageOptions):
    """A variation's text fields (multipart; the picture comes as the file image)."""


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    output_format: OutputFormat
    size: str | None = None
    background: Literal["opaque"] = "opaque"


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="When the weights were recorded (the manifest's time), in seconds.")
    owned_by: str = Field(description="The entry's kind: base, upsample, unclip-prior...")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]
