"""The geometry of editing big pictures (render/regions.py), checked against brute force:
outpainting windows cover every new pixel and each sees what is already painted, the
crop square holds the mask and its margin, a one-pixel mask survives shrinking, and the
feathered paste leaves every pixel outside the feather the source's bytes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from glidecli.render.regions import (
    Box,
    Extension,
    blend,
    coverage_mask,
    crop,
    distance_to,
    feather_weights,
    fill_unknown,
    mask_box,
    paste,
    plan_windows,
    sides,
    square_around,
)

# --- outpainting windows ----------------------------------------------------------------------

CASES = [
    # width, height, extension, window, context
    (32, 32, Extension(16, 16, 0, 0), 32, 16),
    (32, 32, Extension(0, 0, 40, 3), 32, 16),
    (256, 256, Extension(0, 300, 100, 40), 256, 128),
    (300, 180, Extension(7, 0, 0, 90), 256, 200),
    (20, 12, Extension(1, 2, 3, 4), 32, 8),  # canvas smaller than a window
    (40, 24, Extension(5, 30, 7, 3), 32, 16),
    (64, 16, Extension(0, 0, 0, 100), 32, 24),
    # rectangular windows (glide outpaint --window WxH)
    (40, 24, Extension(5, 30, 7, 3), (48, 32), 16),
    (20, 12, Extension(1, 2, 3, 4), (16, 40), 8),
    (64, 16, Extension(9, 0, 0, 100), (32, 48), 24),
]


@pytest.mark.parametrize("width, height, extension, window, context", CASES)
def test_windows_cover_the_border_and_each_sees_painted_pixels(width, height, extension, window, context):
    canvas_w, canvas_h = extension.canvas(width, height)
    painted = np.zeros((canvas_h, canvas_w), dtype=bool)
    painted[extension.top : extension.top + height, extension.left : extension.left + width] = True
    original = painted.copy()
    windows = plan_windows(width, height, extension, window, context)
    window_w, window_h = sides(window)
    assert len(windows) == len(set(windows))
    for box in windows:
        assert (box.width, box.height) == (window_w, window_h)
        if canvas_w >= window_w:
            assert 0 <= box.left and box.right <= canvas_w
        if canvas_h >= window_h:
            assert 0 <= box.top and box.bottom <= canvas_h
        known, inside = crop(painted, box)
        new = inside & ~known
        # Whenever a window paints, part of it is already painted (picture or earlier windows).
        assert new.any() and known.any(), box  # it paints something, next to something painted
        paste(painted, box, new, new)
    assert painted.all(), "some canvas pixels lie in no window"
    assert original.sum() == width * height


def test_windows_step_outward_and_keep_the_context():
    """Growing 32 pixels to the right with 32-pixel windows and 16 of context: the first
    window holds the picture's last 16 columns, the next the first window's last 16."""
    windows = plan_windows(32, 32, Extension(right=32), 32, 16)
    assert windows == [Box(16, 0, 48, 32), Box(32, 0, 64, 32)]
    left = plan_windows(32, 32, Extension(left=32), 32, 16)
    assert left == [Box(16, 0, 48, 32), Box(0, 0, 32, 32)]
    # a 48x32 window steps 48 - 16 to the right and spans the 32-pixel-high picture at once
    assert plan_windows(32, 32, Extension(right=64), (48, 32), 16) == [Box(16, 0, 64, 32), Box(48, 0, 96, 32)]


def test_extension_to_a_size_centres_the_picture():
    assert Extension.to_size(30, 20, 41, 20) == Extension(5, 6, 0, 0)
    assert Extension(1, 2, 3, 4).canvas(10, 10) == (13, 17)
    assert Extension().empty and not Extension(bottom=1).empty
    with pytest.raises(ValueError):
        Extension.to_size(30, 20, 29, 40)
    with pytest.raises(ValueError):
        plan_windows(32, 32, Extension(right=4), 32, 32)
    with pytest.raises(ValueError, match="between 1 and 15"):  # the context must leave room along both sides
        plan_windows(32, 32, Extension(right=4), (48, 16), 16)


# --- inpainting a region ----------------------------------------------------------------------


def test_square_holds_the_mask_and_its_margin_inside_the_picture():
    rng = np.random.default_rng(0)
    for _ in range(200):
        width, height = (int(v) for v in rng.integers(8, 400, 2))
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = Box(x0, y0, int(rng.integers(x0 + 1, width + 1)), int(rng.integers(y0 + 1, height + 1)))
        margin, min_side = int(rng.integers(0, 40)), int(rng.choice([32, 64, 256]))
        square = square_around(box, margin, width, height, min_side)
        assert square.width == square.height <= max(width, height)
        assert square.width >= min(min_side, max(width, height))
        # the mask box plus margin, as far as it lies in the picture, is inside the square
        assert square.left <= max(box.left - margin, 0) and square.top <= max(box.top - margin, 0)
        assert square.right >= min(box.right + margin, width) and square.bottom >= min(box.bottom + margin, height)
        if square.width <= width:
            assert 0 <= square.left and square.right <= width
        if square.height <= height:
            assert 0 <= square.top and square.bottom <= height


def test_mask_box_and_crop_outside_the_picture():
    mask = np.zeros((10, 12), dtype=bool)
    assert mask_box(mask) is None
    mask[2, 3] = mask[6, 8] = True
    assert mask_box(mask) == Box(3, 2, 9, 7)
    pixels = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    part, inside = crop(pixels, Box(-2, 8, 3, 13))
    assert part.shape == (5, 5, 3) and inside.sum() == 3 * 2
    assert np.array_equal(part[:2, 2:], pixels[8:10, 0:3]) and not part[~inside].any()


def test_a_one_pixel_mask_survives_shrinking():
    for side, size in itertools.product((300, 97, 64), (32, 64)):
        for y, x in ((0, 0), (side - 1, side - 1), (side // 2, side // 3)):
            mask = np.zeros((side, side), dtype=bool)
            mask[y, x] = True
            small = coverage_mask(mask, size)
            assert small.shape == (size, size) and 1 <= small.sum() <= 4, (side, size, y, x)
    full = np.ones((97, 97), dtype=bool)
    assert coverage_mask(full, 32).all() and not coverage_mask(~full, 32).any()


def test_distance_is_euclidean_up_to_the_limit():
    rng = np.random.default_rng(1)
    mask = rng.random((23, 31)) < 0.02
    mask[5, 5] = True
    points = np.argwhere(mask)
    grid = np.stack(np.meshgrid(np.arange(23), np.arange(31), indexing="ij"), axis=-1)
    exact = np.sqrt(((grid[:, :, None, :] - points[None, None]) ** 2).sum(-1)).min(-1)
    found = distance_to(mask, 6)
    near = exact <= 6
    assert np.allclose(found[near], exact[near]) and np.isinf(found[~near]).all()


def test_feathered_blend_keeps_every_byte_outside_the_feather():
    rng = np.random.default_rng(2)
    source = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    painted = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    mask = np.zeros((40, 50), dtype=bool)
    mask[10:14, 20:23] = True
    weights = feather_weights(mask, 5)
    assert (weights[mask] == 1).all()
    ring = (distance_to(mask, 5) > 0) & (distance_to(mask, 5) <= 5)
    assert ((weights[ring] > 0) & (weights[ring] < 1)).all()
    result = blend(source, painted, weights)
    outside = weights == 0
    assert outside.sum() == (~mask & ~ring).sum()
    assert np.array_equal(result[outside], source[outside]) and np.array_equal(result[mask], painted[mask])
    assert np.array_equal(feather_weights(mask, 0), mask.astype(float))


def test_unknown_pixels_take_the_known_mean_colour():
    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    pixels[:, :2] = (10, 20, 30)
    pixels[0, 0] = (12, 20, 30)
    known = np.zeros((4, 4), dtype=bool)
    known[:, :2] = True
    filled = fill_unknown(pixels, known)
    assert np.array_equal(filled[known], pixels[known]) and (filled[~known] == (10, 20, 30)).all()
