"""Which sides the networks take (render/sizes.py), that every U-Net variant runs on
pictures that are not square, that pictures and masks fit rectangles, and that inpainting
works at a rectangle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from glidecli.diffusion.noise import ImageNoise
from glidecli.files.images import load_image, load_mask
from glidecli.files.manifest import load_manifest
from glidecli.render.pipeline import Conditioning, Inpainting, SamplerChoice, StageInputs, sample_stage
from glidecli.render.sizes import check_side, side_multiple, side_range, stage_sizes
from helpers.tiny import tiny_network

MANIFEST = load_manifest()  # the packaged one: GLIDE's 64 base, 256 upsampler


def test_glide_sizes():
    base, upsampler = MANIFEST.model("base").arch, MANIFEST.model("upsample").arch
    assert (side_multiple(base), side_range(base)) == (8, (32, 128))
    assert (side_multiple(upsampler), side_range(upsampler)) == (32, (128, 512))
    assert stage_sizes(None, None, base, upsampler) == (None, None)
    assert stage_sizes(256, 384, base, upsampler) == ((96, 64), (384, 256))
    assert stage_sizes(384, None, base, upsampler) == ((64, 96), (256, 384))
    assert stage_sizes(96, 64, base, None) == ((64, 96), None)


@pytest.mark.parametrize("width, height", [(250, 256), (96, 256), (544, 256), (256, 0)])
def test_sizes_the_upsampler_cannot_make_are_refused(width, height):
    base, upsampler = MANIFEST.model("base").arch, MANIFEST.model("upsample").arch
    with pytest.raises(ValueError, match="multiples of 32 from 128 to 512"):
        stage_sizes(width, height, base, upsampler)


@pytest.mark.parametrize("side", [20, 24, 60, 136])
def test_sides_the_base_model_cannot_take_are_refused(side):
    with pytest.raises(ValueError, match="multiples of 8 from 32 to 128"):
        check_side(MANIFEST.model("base").arch, side, "the width")


@pytest.mark.parametrize("kind", ["base", "upsample", "base-inpaint", "upsample-inpaint"])
def test_every_unet_runs_on_pictures_that_are_not_square(kind):
    """The convolutions and the attention (any number of tokens) take any sides the
    network can halve at every level; a picture made of two copies side by side gives two
    copies' worth of output, each finite and of the right shape."""
    network = tiny_network(kind)
    cfg = network.config
    step = side_multiple(cfg)
    height, width = cfg.image_size, cfg.image_size + 2 * step
    x = torch.randn(2, 3, height, width)
    text = network.encode_text(torch.zeros(2, cfg.text_ctx, dtype=torch.long), torch.ones(2, cfg.text_ctx, dtype=torch.bool))
    images = {}
    if cfg.super_res:
        images["low_res"] = torch.randn(2, 3, height // 2, width // 2)
    if cfg.inpaint:
        images.update(inpaint_image=torch.randn(2, 3, height, width), inpaint_mask=torch.ones(2, 1, height, width))
    with torch.no_grad():
        out = network(x, torch.tensor([10, 500]), text, **images)
        tall = network(x.transpose(-1, -2), torch.tensor([10, 500]), text,
                       **{k: v.transpose(-1, -2) for k, v in images.items()})
    assert out.shape == (2, cfg.out_channels, height, width) and tall.shape == (2, cfg.out_channels, width, height)
    assert torch.isfinite(out).all() and torch.isfinite(tall).all()


# --- pictures fitted to rectangles, and inpainting at a rectangle ------------------------------


def _picture(path, width, height):
    """Left half red, right half blue; a white square in the middle."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = (255, 0, 0)
    pixels[:, width // 2 :] = (0, 0, 255)
    pixels[height // 2 - 2 : height // 2 + 2, width // 2 - 2 : width // 2 + 2] = 255
    Image.fromarray(pixels).save(path)
    return path


def _rgb(tensor):
    return ((tensor[0].permute(1, 2, 0).numpy() + 1) * 127.5).round()


def test_pictures_fit_rectangles(tmp_path):
    wide = _picture(tmp_path / "wide.png", 64, 32)
    assert load_image(wide, None).shape == (1, 3, 32, 64)  # as it is
    same = _rgb(load_image(wide, (32, 16), "crop"))  # same aspect ratio: a plain resize
    assert same.shape == (16, 32, 3) and (same[:, 0] == (255, 0, 0)).all() and (same[:, -1] == (0, 0, 255)).all()
    square = _rgb(load_image(wide, (16, 16), "crop"))  # centre crop: the middle 32x32
    assert (square[:, 0] == (255, 0, 0)).all() and (square[:, -1] == (0, 0, 255)).all()
    tall = _rgb(load_image(wide, (16, 32), "pad"))  # letterboxed: black above and below
    assert tall.shape == (32, 16, 3) and (tall[:12] == 0).all() and (tall[-12:] == 0).all()
    assert tall[16, 0, 0] > 200 and tall[16, -1, 2] > 200
    stretched = _rgb(load_image(wide, (16, 32), "stretch"))
    assert stretched.shape == (32, 16, 3) and (stretched[:, 0] == (255, 0, 0)).all()
    # A mask of the same file lands on the same pixels as its picture, for every fit.
    for fit in ("crop", "pad", "stretch"):
        keep = load_mask(wide, (24, 40), fit)[0, 0].numpy().astype(bool)
        white = (_rgb(load_image(wide, (24, 40), fit)) > 127).all(-1)
        # (the picture is resized bicubic and the mask nearest: their edges may differ by a pixel)
        assert keep.shape == (40, 24) and (~keep).sum() > 0
        box = lambda region: np.concatenate([np.argwhere(region).min(0), np.argwhere(region).max(0)])  # noqa: E731
        assert np.abs(box(~keep) - box(white)).max() <= 1, fit


def test_inpainting_a_rectangle_keeps_the_known_region_exactly():
    network = tiny_network("base-inpaint")
    cfg = network.config
    height, width = cfg.image_size, cfg.image_size + 2 * side_multiple(cfg)
    source = torch.rand(2, 3, height, width) * 2 - 1
    keep = torch.ones(2, 1, height, width)
    keep[..., 4:10, 6:20] = 0
    tokenizer_tokens = torch.zeros(2, cfg.text_ctx, dtype=torch.long)
    text = network.encode_text(tokenizer_tokens, torch.ones(2, cfg.text_ctx, dtype=torch.bool))
    conditioning = Conditioning(text, None, [False, False])
    out = sample_stage(network, conditioning, ImageNoise([1, 2]), SamplerChoice("ddim", "5"),
                       inputs=StageInputs(inpainting=Inpainting(source, keep)))
    assert out.shape == (2, 3, height, width)
    assert torch.equal(out * keep, source * keep)
    assert not torch.equal(out, source)
