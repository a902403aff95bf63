"""unCLIP's edits (render/unclip_edits.py, the inversion in render/pipeline.py): text diffs and
--keep-layout through render_vary/render_blend on the tiny random-weight unCLIP networks
(helpers/tiny_unclip.py), and the inversion round trip on the small trained decoder (models/).

The round trip is not checked on random weights, at full size or tiny: a random decoder is no
denoiser, so DDIM is not invertible with it in practice. At the cosine schedule's top step
(alpha_bar ~ 6e-9) x0 = (x - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) multiplies any error
in eps by ~1e4 and is clipped to [-1, 1] (so the step map jumps and some x_prev have no x);
with the tiny Karlo decoder on random weights (std 0.1 or 0.03, float64, clipping off) the
fixed point diverges in both forms and decoding the inversion misses by 1e4-1e5. The exact
round trip is checked on a toy model instead (tests/diffusion/test_inversion.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from glidecli.diffusion.noise import ImageNoise
from glidecli.files.images import open_rgb
from glidecli.files.manifest import load_manifest
from glidecli.nets.clip_vit import clip_text, image_embedding, preprocess_image
from glidecli.render.engine import BlendJob, Job, RenderOptions, Session, Stage
from glidecli.render.pipeline import SamplerChoice, StageInputs, invert_stage, sample_stage
from glidecli.render.session import RenderError
from glidecli.render.unclip import TextDiff, VaryJob, decoder_conditioning, render_blend, render_vary
from glidecli.render.unclip_edits import decoder_picture, layout_stage, slerp, text_diff_embedding
from glidecli.train.shapes import draw_scene
from helpers.paths import MODELS
from helpers.tiny_unclip import CLIP_DIM

DDIM25 = SamplerChoice("ddim", "25")
SHAPES = MODELS / "weights.toml"


@pytest.mark.skipif(not SHAPES.is_file(), reason=f"the small models are absent: {SHAPES}")
def test_the_trained_decoder_inverts_then_decodes_its_picture_back(tmp_path):
    """The small unCLIP's decoder (models/: Karlo's decoder layout at 32x32, trained) at
    guidance 1: the picture comes back within a level of 8 bits, and each refinement of the
    inversion brings it closer."""
    session = Session(load_manifest(SHAPES), device="cpu", dtype="fp32", offline=True)
    decoder, clip = session.network("shapes-decoder", "unclip-decoder"), session.network("shapes-clip", "openclip")
    path = tmp_path / "scene.png"
    draw_scene("red", "circle", "blue", 32).save(path)
    picture = decoder_picture(path, 32)
    tokens = session.clip_tokenizer(clip.config.text_ctx).batch([""])
    with torch.no_grad():
        text = clip_text(clip, tokens.tokens, torch.arange(tokens.tokens.shape[1])[None] < tokens.lengths[:, None])
        conditioning = decoder_conditioning(decoder, text, None, image_embedding(clip, preprocess_image(open_rgb(path), clip.config)[None]))
        errors = []
        for refine in (0, 3, 10):
            x_t = invert_stage(decoder, conditioning, picture, DDIM25, refine=refine)
            again = sample_stage(decoder, conditioning, ImageNoise([0]), DDIM25, inputs=StageInputs(start=x_t))
            errors.append(float((again - picture).abs().max()) * 127.5)
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1.0, errors  # in levels of 8 bits
    assert float((x_t - picture).abs().mean()) > 0.3  # the noise found is not the picture itself


def test_a_text_diff_turns_the_direction_and_keeps_the_length():
    generator = torch.Generator().manual_seed(0)
    image, away, toward = (torch.randn(CLIP_DIM, generator=generator) for _ in range(3))
    difference = (toward - away) / (toward - away).norm()
    assert torch.allclose(text_diff_embedding(image, away, toward, 0.0), image, atol=1e-6)
    assert torch.allclose(text_diff_embedding(image, away, toward, 1.0), difference * image.norm(), atol=1e-5)
    cosines = []
    for amount in (0.0, 0.25, 0.5, 0.75, 1.0):
        edited = text_diff_embedding(image, away, toward, amount)
        assert abs(float(edited.norm() - image.norm())) < 1e-4
        cosines.append(float(edited @ difference / edited.norm()))
    assert cosines == sorted(cosines) and cosines[-1] > 0.999
    # Constant angular speed: the paper's slerp between the picture and the direction.
    assert torch.allclose(text_diff_embedding(image, away, toward, 0.3), slerp(image, difference * image.norm(), 0.3))
    with pytest.raises(RenderError, match="same CLIP text embedding"):
        text_diff_embedding(image, away, away, 0.5)


def test_keep_layout_decodes_with_ddim_and_refuses_pictures_that_are_not_square(tmp_path):
    stage = layout_stage(Stage("karlo-decoder", SamplerChoice("ddpm", "25"), scale=8.0))
    assert (stage.sampler.name, stage.sampler.steps, stage.sampler.eta, stage.scale) == ("ddim", "25", 0.0, 8.0)
    Image.new("RGB", (40, 56), (9, 9, 9)).save(tmp_path / "tall.png")
    Image.new("RGB", (6, 6), (9, 9, 9)).save(tmp_path / "tiny.png")
    Image.new("RGB", (64, 64), (255, 0, 0)).save(tmp_path / "square.png")
    with pytest.raises(RenderError, match="40x56: crop it square"):
        decoder_picture(tmp_path / "tall.png", 16)
    with pytest.raises(RenderError, match="at least 8x8"):
        decoder_picture(tmp_path / "tiny.png", 16)
    picture = decoder_picture(tmp_path / "square.png", 16)
    assert picture.shape == (1, 3, 16, 16) and torch.allclose(picture[0, 0], torch.ones(16, 16))


@pytest.fixture(scope="module")
def session(tiny_unclip_manifest) -> Session:
    return Session(load_manifest(tiny_unclip_manifest), device="cpu", dtype="fp32", offline=True)


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "picture.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)
    return path


DECODER = Stage("karlo-decoder", SamplerChoice("ddpm", "4"), scale=2.0)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_render_vary_moves_by_each_amount_and_records_the_texts(session, picture):
    diff = TextDiff("a green cube", "a red cube")
    jobs = [VaryJob("", 3, k, amount=amount) for k, amount in enumerate((0.0, 0.5, 1.0))]
    done = list(render_vary(session, jobs, picture, DECODER, None, text_diff=diff, options=RenderOptions(batch_size=3)))
    plain = list(render_vary(session, [Job("", 3, 0)], picture, DECODER, None))
    assert np.abs(pixels(done[0].image) - pixels(plain[0].image)).max() <= 1  # amount 0: the picture's own embedding
    assert not np.array_equal(pixels(done[0].image), pixels(done[2].image))
    meta = done[1].meta
    assert (meta["amount"], meta["toward"], meta["away"]) == (0.5, "a green cube", "a red cube") and "keep_layout" not in meta
    with pytest.raises(TypeError, match="VaryJob"):
        list(render_vary(session, [Job("", 3, 0)], picture, DECODER, None, text_diff=diff))


def test_keep_layout_gives_every_seed_the_same_decoder_picture(session, picture):
    jobs = [Job("", seed, k) for k, seed in enumerate((1, 2))]
    kept = list(render_vary(session, jobs, picture, DECODER, None, keep_layout=True, options=RenderOptions(batch_size=2)))
    assert np.array_equal(pixels(kept[0].image), pixels(kept[1].image))
    assert kept[0].meta["keep_layout"] is True and kept[0].meta["layout_refine"] == 3 and kept[0].meta["decoder_sampler"] == "ddim"
    fresh = list(render_vary(session, jobs, picture, DECODER, None))
    assert not np.array_equal(pixels(fresh[0].image), pixels(fresh[1].image))
    # A blend keeping the layout starts every frame from picture A's inversion: at mix 0 it is
    # the variation of A that keeps its layout.
    frames = list(render_blend(session, [BlendJob("", 5, 0, mix=0.0), BlendJob("", 5, 1, mix=1.0)], picture, picture, DECODER, None, keep_layout=True))
    assert np.abs(pixels(frames[0].image) - pixels(kept[0].image)).max() <= 1
