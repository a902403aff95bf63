"""The small models shipped in models/ (trained with `glide train` on the shapes data set; see
models/README.md): with classifier-free guidance most of the base model's pictures show the
colours the prompt asks for, measured on the pixels (object = centre, background = border),
as they do without guidance, and far more often than with an empty prompt; the inpainting
model paints the prompted colour into the region it repaints; the upsampler keeps the
colours and sharpens the edges. Runs offline from the repository alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glidecli.cli import main as cli
from glidecli.diffusion.noise import ImageNoise
from glidecli.files.manifest import load_manifest
from glidecli.render.engine import (
    DEFAULT_BASE,
    DEFAULT_UPSAMPLE,
    Job,
    RenderOptions,
    Session,
    Stage,
    render_generate,
)
from glidecli.render.pipeline import (
    Inpainting,
    SamplerChoice,
    StageInputs,
    encode_prompts,
    sample_stage,
)
from glidecli.render.prompt_syntax import Emphasis
from glidecli.train.data import pil_to_tensor
from glidecli.train.shapes import EVAL_SCENES, SHAPE_COLOURS, colour_hits, draw_scene, scene_colours, shape_caption
from helpers.paths import MODELS

MANIFEST = MODELS / "weights.toml"
MODEL = "shapes"

PROMPTS = EVAL_SCENES
SEEDS = (0, 1, 2, 3)
SAMPLER = DEFAULT_BASE.sampler  # what glide generate uses

pytestmark = pytest.mark.skipif(not MANIFEST.is_file(), reason=f"the small model is absent: {MANIFEST}")


def render(session: Session, prompts: list[str], scale: float) -> list[np.ndarray]:
    jobs = [Job(prompt, seed, index) for index, (prompt, seed) in enumerate((p, s) for p in prompts for s in SEEDS)]
    stage = Stage(MODEL, SAMPLER, scale=scale)
    done = render_generate(session, jobs, stage, None, options=RenderOptions(batch_size=len(jobs)))
    return [np.asarray(item.image.convert("RGB"), dtype=np.float64) for item in done]


@pytest.fixture(scope="module")
def session() -> Session:
    return Session(load_manifest(MANIFEST), device="cpu", dtype="fp32", offline=True)


@pytest.fixture(scope="module")
def scores(session) -> dict[str, tuple[int, int]]:
    captions = [shape_caption(*p) for p in PROMPTS]
    targets = [scene for scene in PROMPTS for _ in SEEDS]
    return {
        "guided": colour_hits(render(session, captions, 3.0), targets),
        "scale1": colour_hits(render(session, captions, 1.0), targets),
        # The empty prompt is the unconditional model at any scale (both halves agree).
        "empty": colour_hits(render(session, [""] * len(captions), 1.0), targets),
    }


def test_the_manifest_is_self_contained():
    manifest = load_manifest(MANIFEST)
    entry = manifest.model(MODEL)
    assert entry.kind == "base" and entry.tokenizer in manifest.tokenizers
    assert entry.source.path.is_file() and entry.source.path.parent == MODELS
    assert manifest.tokenizer(entry.tokenizer).source.path.parent == MODELS
    assert entry.source.path.stat().st_size < 8_000_000


# What the issue asks of the small model: at guidance 3 most pictures have both colours the
# prompt asks for, far more than with an empty prompt (which is near chance). Measured with
# the settings above: guided 28/32 pictures fully right, scale 1 32/32, empty prompt 0/32
# (models/README.md). Since the model predicts v it follows the prompt without guidance too;
# guidance 3 only over-saturates a little (the orange circle comes out yellow), so it is not
# better than scale 1 here.
def test_guided_pictures_have_the_prompted_colours(scores):
    total = len(PROMPTS) * len(SEEDS)
    print({name: f"{b}/{total} pictures right, {s}/{2 * total} colours right" for name, (b, s) in scores.items()})
    assert scores["guided"][0] >= 0.75 * total, scores


def test_the_prompt_decides_the_colours_with_or_without_guidance(scores):
    total = len(PROMPTS) * len(SEEDS)
    guided, scale1, empty = scores["guided"], scores["scale1"], scores["empty"]
    assert scale1[0] >= 0.75 * total, scores
    assert min(guided[0], scale1[0]) >= empty[0] + 0.5 * total, scores


def test_the_empty_prompt_is_near_chance(scores):
    total = len(PROMPTS) * len(SEEDS)
    assert scores["empty"][0] <= 0.25 * total, scores


def test_glide_generate_uses_the_small_model(tmp_path, capsys, monkeypatch):
    """The command the README shows works offline: the base model, then the upsampler the
    manifest's [defaults] names, a 64x64 picture with its settings recorded."""
    from glidecli.files.pngfile import read_png_metadata

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GLIDE_WEIGHTS", raising=False)
    code = cli.run(["generate", "a red circle on a blue background", "--weights", str(MANIFEST), "--model", MODEL,
                    "--steps", "20", "--seed", "0", "--quiet", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    [path] = [Path(line) for line in out.splitlines()]
    meta = read_png_metadata(path)
    assert (meta["size"], meta["model"], meta["scale"], meta["upsample_model"]) == (64, MODEL, 3.0, "shapes-upsample")


# --- the small inpainting and upsampling models ---------------------------------------------
# Each is tested on the shapes scenes the same way: pixel colours of the repainted (or
# upsampled) region against the prompt, through the Python API.

INPAINT_MODEL, UPSAMPLE_MODEL = "shapes-inpaint", "shapes-upsample"
INPAINT_SAMPLER = SamplerChoice("ddpm", "25")  # glide inpaint's sampler with a quarter of its steps, for speed


def _present(name: str) -> bool:
    return MANIFEST.is_file() and name in load_manifest(MANIFEST).models


def _other_colour(*taken: str) -> str:
    """A colour for the source picture that the prompt does not ask for."""
    return next(c for c in reversed(list(SHAPE_COLOURS)) if c not in taken)


def _pixels(images: torch.Tensor) -> list[np.ndarray]:
    return [((x.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255) for x in images.float().cpu()]


def _inpaint(session: Session, region: str, scale: float, empty: bool = False) -> list[np.ndarray]:
    """Repaint the object ("object": the middle half of each side) or everything around it
    ("background") of pictures whose colour there is not the one the prompt asks for."""
    model = session.unet(INPAINT_MODEL, "base-inpaint")
    size = model.config.image_size
    sources, prompts, seeds = [], [], []
    for colour, shape, background in PROMPTS:
        if region == "object":
            source = draw_scene(_other_colour(colour, background), shape, background, size)
        else:
            source = draw_scene(colour, shape, _other_colour(colour, background), size)
        for seed in SEEDS:
            sources.append(pil_to_tensor(source))
            prompts.append("" if empty else shape_caption(colour, shape, background))
            seeds.append(seed)
    middle = torch.zeros(1, 1, size, size)
    middle[..., size // 4 : size - size // 4, size // 4 : size - size // 4] = 1.0
    keep = (1.0 - middle if region == "object" else middle).expand(len(sources), 1, size, size)
    tokenizer = session.tokenizer(model.config.text_ctx, INPAINT_MODEL)
    conditioning = encode_prompts(model, tokenizer, prompts, guided=scale != 1.0)
    images = sample_stage(model, conditioning, ImageNoise(seeds), INPAINT_SAMPLER, scale=scale,
                          inputs=StageInputs(inpainting=Inpainting(torch.stack(sources), keep.contiguous())))
    return _pixels(images)


def _region_hits(pictures: list[np.ndarray], region: str) -> int:
    targets = [scene for scene in PROMPTS for _ in SEEDS]
    found = [scene_colours(p) for p in pictures]
    if region == "object":
        return sum(f[0] == t[0] for f, t in zip(found, targets))
    return sum(f[1] == t[2] for f, t in zip(found, targets))


@pytest.mark.skipif(not _present(INPAINT_MODEL), reason=f"no {INPAINT_MODEL} in {MANIFEST}")
@pytest.mark.parametrize("region", ["object", "background"])
def test_inpainting_paints_the_prompted_colour_into_the_region(session, region):
    """At guidance 3 (glide inpaint's 5 over-saturates this small model: orange turns red),
    the repainted region takes the prompt's colour, not the source's; with an empty prompt
    it takes any colour."""
    total = len(PROMPTS) * len(SEEDS)
    guided = _region_hits(_inpaint(session, region, 3.0), region)
    scale1 = _region_hits(_inpaint(session, region, 1.0), region)
    empty = _region_hits(_inpaint(session, region, 1.0, empty=True), region)
    print({"region": region, "guided": guided, "scale1": scale1, "empty": empty, "of": total})
    assert guided >= 0.75 * total and scale1 >= 0.75 * total
    assert guided >= empty + 0.5 * total


def _upsample(session: Session, prompts: list[str], lows: list[Image.Image], seeds: list[int]) -> list[np.ndarray]:
    model = session.unet(UPSAMPLE_MODEL, "upsample")
    tokenizer = session.tokenizer(model.config.text_ctx, UPSAMPLE_MODEL)
    conditioning = encode_prompts(model, tokenizer, prompts, guided=False)
    low_res = torch.stack([pil_to_tensor(low) for low in lows])
    images = sample_stage(model, conditioning, ImageNoise(seeds), DEFAULT_UPSAMPLE.sampler, inputs=StageInputs(low_res=low_res),
                          temperature=DEFAULT_UPSAMPLE.temperature)
    return _pixels(images)


@pytest.mark.skipif(not _present(UPSAMPLE_MODEL), reason=f"no {UPSAMPLE_MODEL} in {MANIFEST}")
def test_upsampling_keeps_the_colours_and_sharpens_the_edges(session):
    """4x upsampling of small shapes pictures: the colours stay those of the prompt, and the
    result is closer to the picture drawn at full size than a bicubic enlargement is."""
    size = session.unet(UPSAMPLE_MODEL, "upsample").config.image_size
    truths = [draw_scene(*scene, size) for scene in PROMPTS for _ in SEEDS]
    lows = [truth.resize((size // 4, size // 4), Image.Resampling.BICUBIC) for truth in truths]
    prompts = [shape_caption(*scene) for scene in PROMPTS for _ in SEEDS]
    upsampled = _upsample(session, prompts, lows, [seed for _ in PROMPTS for seed in SEEDS])
    right = colour_hits(upsampled, [scene for scene in PROMPTS for _ in SEEDS])[0]
    target = [np.asarray(t, dtype=np.float64) for t in truths]
    bicubic = [np.asarray(low.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64) for low in lows]
    error = lambda pictures: float(np.mean([np.abs(p - t).mean() for p, t in zip(pictures, target)]))  # noqa: E731
    print({"colours right": right, "of": len(truths), "upsampler error": error(upsampled), "bicubic error": error(bicubic)})
    assert right >= 0.9 * len(truths)
    assert error(upsampled) < error(bicubic)


def test_the_sequence_only_model_draws_the_prompts_colours_without_a_pooled_path(session):
    """shapes-seq (shapes fine-tuned with --no-pooled-text) has no pooled projection, so its
    colours come through the token sequence alone: at guidance 3 it gets both colours of the
    8 scenes x 4 seeds right in at least 30 (measured: 32, models/README.md)."""
    entry = load_manifest(MANIFEST).model("shapes-seq")
    assert entry.arch is not None and entry.arch.xf_pooled is False
    network = session.unet("shapes-seq", "base")
    assert network.transformer_proj is None
    jobs = [Job(shape_caption(*scene), seed, index) for index, (scene, seed) in enumerate((p, s) for p in PROMPTS for s in SEEDS)]
    done = render_generate(session, jobs, Stage("shapes-seq", SAMPLER, scale=3.0), None, options=RenderOptions(batch_size=len(jobs)))
    pictures = [np.asarray(item.image.convert("RGB"), dtype=np.float64) for item in done]
    both, _ = colour_hits(pictures, [scene for scene in PROMPTS for _ in SEEDS])
    assert both >= 30


def red_objects(session: Session, prompt: str, emphasis: Emphasis, seeds: int = 8) -> int:
    jobs = [Job(prompt, seed, seed, emphasis=emphasis) for seed in range(seeds)]
    done = render_generate(session, jobs, Stage("shapes-words", SamplerChoice("dpmpp_2m", "10"), scale=3.0), None, options=RenderOptions(batch_size=seeds))
    return sum(scene_colours(np.asarray(item.image.convert("RGB"), dtype=np.float64))[0] == "red" for item in done)


def test_the_word_model_draws_the_colours_and_comfy_emphasis_moves_them_the_way_asked(session):
    """shapes-words (no pooled path, no text layers: each position holds its own word) gets
    both colours of the 8 scenes x 4 seeds right in at least 30 (measured: 32); with ComfyUI's
    emphasis, weighing up the second colour named makes the object that colour, weighing down
    the first lets the second win (32-seed figures in docs/prompts.md: 32/32 and 2/32 red)."""
    entry = load_manifest(MANIFEST).model("shapes-words")
    assert entry.arch is not None and (entry.arch.xf_layers, entry.arch.xf_pooled) == (0, False)
    jobs = [Job(shape_caption(*scene), seed, index) for index, (scene, seed) in enumerate((p, s) for p in PROMPTS for s in SEEDS)]
    done = render_generate(session, jobs, Stage("shapes-words", SAMPLER, scale=3.0), None, options=RenderOptions(batch_size=len(jobs)))
    both, _ = colour_hits([np.asarray(item.image.convert("RGB"), dtype=np.float64) for item in done], [scene for scene in PROMPTS for _ in SEEDS])
    assert both >= 30
    comfy = Emphasis.COMFY
    assert red_objects(session, "a green red circle on a black background", comfy) <= 1
    assert red_objects(session, "a green (red:3) circle on a black background", comfy) >= 6
    assert red_objects(session, "a red green circle on a black background", comfy) >= 7
    assert red_objects(session, "a (red:0.5) green circle on a black background", comfy) <= 2
