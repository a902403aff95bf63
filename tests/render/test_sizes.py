"""Which sides the networks take (render/sizes.py), and that every U-Net variant runs on
pictures that are not square."""

from __future__ import annotations

import pytest
import torch

from glidecli.files.manifest import load_manifest
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
