"""Tests for glidecli.files.images (loading, fitting, masks) and glidecli.files.pngfile (metadata, writing, naming)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from glidecli.files import images
from glidecli.files.images import (
    batch_to_pil,
    check_same_size,
    has_alpha,
    load_image,
    load_image_rgba,
    load_mask,
    mask_from_alpha,
    pil_to_tensor,
    tensor_to_pil,
)
from glidecli.files.parameters import build_parameters_text, parse_parameters_text
from glidecli.files.pngfile import (
    ImageError,
    next_free_index,
    read_png_metadata,
    render_output_path,
    slugify,
    write_png,
)

RED, GREEN, BLUE, BLACK, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0), (255, 255, 255)


# --------------------------------------------------------------------------- helpers


def banded(path: Path, width: int = 200, height: int = 100) -> Path:
    """A wide picture: red left quarter, green middle half, blue right quarter."""
    image = Image.new("RGB", (width, height), GREEN)
    image.paste(RED, (0, 0, width // 4, height))
    image.paste(BLUE, (3 * width // 4, 0, width, height))
    image.save(path)
    return path


def colour_at(tensor: torch.Tensor, x: int, y: int) -> tuple[int, ...]:
    """The uint8 colour of pixel (x, y) of a [1, 3, H, W] image tensor."""
    return tuple(int(v) for v in ((tensor[0, :, y, x] + 1) * 127.5).round())


def png_chunk_types(path: Path) -> list[tuple[bytes, bytes]]:
    """(type, keyword) of every text chunk, read from the raw file."""
    data = path.read_bytes()[8:]
    found = []
    while data:
        length, kind = struct.unpack(">I4s", data[:8])
        body = data[8 : 8 + length]
        if kind in (b"tEXt", b"iTXt", b"zTXt"):
            found.append((kind, body.split(b"\0", 1)[0]))
        data = data[12 + length :]
    return found


def assert_one_line_naming(error: pytest.ExceptionInfo, path: Path) -> None:
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message


# --------------------------------------------------------------------------- fit geometry


def test_crop_keeps_the_centre(tmp_path):
    tensor = load_image(banded(tmp_path / "wide.png"), 64, fit="crop")
    assert tensor.shape == (1, 3, 64, 64)
    assert tensor.dtype == torch.float32
    # The centre 100x100 of the picture is all green.
    for x in (0, 32, 63):
        assert colour_at(tensor, x, 32) == GREEN


def test_pad_letterboxes_on_black(tmp_path):
    tensor = load_image(banded(tmp_path / "wide.png"), 64, fit="pad")
    # 200x100 scales to 64x32, centred: rows 0-15 and 48-63 are border.
    for y in (0, 15, 48, 63):
        assert colour_at(tensor, 32, y) == BLACK
    assert colour_at(tensor, 2, 32) == RED
    assert colour_at(tensor, 32, 32) == GREEN
    assert colour_at(tensor, 61, 32) == BLUE


def test_pad_of_a_tall_image_adds_side_borders(tmp_path):
    path = tmp_path / "tall.png"
    Image.new("RGB", (50, 100), WHITE).save(path)
    tensor = load_image(path, 64, fit="pad")
    assert colour_at(tensor, 0, 32) == BLACK
    assert colour_at(tensor, 63, 32) == BLACK
    assert colour_at(tensor, 32, 32) == WHITE


def test_stretch_keeps_everything(tmp_path):
    tensor = load_image(banded(tmp_path / "wide.png"), 64, fit="stretch")
    assert colour_at(tensor, 2, 0) == RED
    assert colour_at(tensor, 32, 63) == GREEN
    assert colour_at(tensor, 61, 32) == BLUE


def test_bad_fit_mode_names_the_file(tmp_path):
    path = banded(tmp_path / "wide.png")
    with pytest.raises(ImageError, match="crop, pad, stretch") as error:
        load_image(path, 64, fit="zoom")
    assert_one_line_naming(error, path)


@pytest.mark.parametrize("fit", ["crop", "pad", "stretch"])
def test_mask_stays_aligned_with_its_image(tmp_path, fit):
    image_path = banded(tmp_path / "wide.png")
    mask_path = tmp_path / "mask.png"
    mask = Image.new("L", (200, 100), 0)
    mask.paste(255, (150, 0, 200, 100))  # repaint exactly the blue quarter
    mask.save(mask_path)
    image = load_image(image_path, 64, fit=fit)
    keep = load_mask(mask_path, 64, fit=fit)[0, 0]
    repaint = (keep == 0).nonzero().tolist()
    if fit == "crop":
        assert not repaint  # the blue quarter is cropped away
        return
    assert repaint
    for y, x in repaint:
        if 0 < x < 63:  # skip the single bicubic boundary column
            r, g, b = colour_at(image, x, y)
            assert b > 200 and r < 60 and g < 60


# --------------------------------------------------------------------------- modes


def test_any_mode_becomes_rgb(tmp_path):
    sources = {
        "rgba.png": Image.new("RGBA", (30, 20), (10, 20, 30, 255)),
        "grey.png": Image.new("L", (30, 20), 200),
        "palette.png": Image.new("RGB", (30, 20), RED).convert("P"),
        "cmyk.jpg": Image.new("CMYK", (30, 20), (0, 0, 0, 0)),
    }
    for name, image in sources.items():
        image.save(tmp_path / name)
        tensor = load_image(tmp_path / name, 16)
        assert tensor.shape == (1, 3, 16, 16), name
        assert tensor.min() >= -1 and tensor.max() <= 1, name
    assert colour_at(load_image(tmp_path / "grey.png", 16), 8, 8) == (200, 200, 200)


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((20, 20), 32896, dtype=np.uint16)).save(path)  # 50% grey
    assert colour_at(load_image(path, 8), 4, 4) == (128, 128, 128)


def test_transparent_pixels_become_black(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (20, 20), (255, 255, 255, 0)).save(path)
    assert colour_at(load_image(path, 8), 4, 4) == BLACK


def test_exif_rotation_is_applied(tmp_path):
    path = tmp_path / "phone.png"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    Image.new("RGB", (40, 20), RED).save(path, exif=exif)
    other = tmp_path / "upright.png"
    Image.new("L", (20, 40)).save(other)
    check_same_size(path, other)  # both 20x40 as the user sees them


# --------------------------------------------------------------------------- masks


def test_white_means_repaint(tmp_path):
    path = tmp_path / "mask.png"
    mask = Image.new("RGB", (64, 64), BLACK)
    mask.paste(WHITE, (0, 0, 32, 64))
    mask.save(path)
    glide_mask = load_mask(path, 64)
    assert glide_mask.shape == (1, 1, 64, 64)
    assert glide_mask[0, 0, :, :32].eq(0).all()  # white -> repaint -> 0
    assert glide_mask[0, 0, :, 32:].eq(1).all()  # black -> keep -> 1
    inverted = load_mask(path, 64, invert=True)
    assert torch.equal(inverted, 1 - glide_mask)


def test_mask_threshold_is_half_grey(tmp_path):
    path = tmp_path / "grey.png"
    mask = Image.new("L", (2, 1))
    mask.putdata([127, 128])
    mask.save(path)
    assert load_mask(path, 2, fit="stretch")[0, 0, 0].tolist() == [1.0, 0.0]


def test_mask_values_are_binary_after_resize(tmp_path):
    path = tmp_path / "noisy.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (97, 131), dtype=np.uint8)).save(path)
    values = set(load_mask(path, 64, fit="pad").unique().tolist())
    assert values <= {0.0, 1.0}


def test_pad_borders_are_kept_in_masks(tmp_path):
    path = tmp_path / "all-white.png"
    Image.new("L", (200, 100), 255).save(path)
    mask = load_mask(path, 64, fit="pad")[0, 0]
    assert mask[0].eq(1).all() and mask[63].eq(1).all()
    assert mask[32].eq(0).all()


def test_alpha_as_mask(tmp_path):
    path = tmp_path / "cutout.png"
    image = Image.new("RGBA", (64, 64), (*RED, 255))
    image.paste((0, 0, 0, 0), (16, 16, 48, 48))
    image.save(path)
    assert has_alpha(path)
    mask = mask_from_alpha(path, 64)
    assert mask.shape == (1, 1, 64, 64)
    assert mask[0, 0, 16:48, 16:48].eq(0).all()  # transparent -> repaint
    assert mask[0, 0, :16].eq(1).all()
    rgb, alpha = load_image_rgba(path, 64)
    assert rgb.shape == (1, 3, 64, 64)
    assert alpha.shape == (1, 1, 64, 64)
    assert alpha[0, 0, 0, 0] == 1 and alpha[0, 0, 32, 32] == 0


def test_palette_transparency_as_mask(tmp_path):
    path = tmp_path / "palette.png"
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(0, (0, 0, 4, 8))
    image.save(path, transparency=0)
    mask = mask_from_alpha(path, 8)[0, 0]
    assert mask[:, :4].eq(0).all() and mask[:, 4:].eq(1).all()


def test_alpha_mask_needs_alpha(tmp_path):
    path = tmp_path / "opaque.png"
    Image.new("RGB", (8, 8)).save(path)
    assert not has_alpha(path)
    assert load_image_rgba(path, 8)[1] is None
    with pytest.raises(ImageError, match="no transparency") as error:
        mask_from_alpha(path, 8)
    assert_one_line_naming(error, path)


def test_mask_size_mismatch(tmp_path):
    image_path = banded(tmp_path / "image.png")
    mask_path = tmp_path / "mask.png"
    Image.new("L", (100, 100)).save(mask_path)
    with pytest.raises(ImageError) as error:
        check_same_size(image_path, mask_path)
    message = str(error.value)
    assert "100x100" in message and "200x100" in message
    assert_one_line_naming(error, mask_path)
    Image.new("L", (200, 100)).save(mask_path)
    check_same_size(image_path, mask_path)


# --------------------------------------------------------------------------- bad inputs


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.png"
    with pytest.raises(ImageError, match="not found") as error:
        load_image(path, 64)
    assert_one_line_naming(error, path)
    with pytest.raises(ImageError, match="mask file not found"):
        load_mask(path, 64)


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("just some text")
    with pytest.raises(ImageError, match="not an image") as error:
        load_image(path, 64)
    assert_one_line_naming(error, path)


def test_truncated_image(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(ImageError) as error:
        load_image(path, 64)
    assert_one_line_naming(error, path)


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(ImageError, match="directory") as error:
        load_image(tmp_path, 64)
    assert_one_line_naming(error, tmp_path)


# --------------------------------------------------------------------------- tensors


def test_tensor_pil_round_trip_is_exact():
    values = np.arange(256, dtype=np.uint8)
    pixels = np.stack([values.reshape(16, 16), values[::-1].reshape(16, 16), values.reshape(16, 16).T], -1)
    image = Image.fromarray(pixels, "RGB")
    tensor = pil_to_tensor(image)
    assert tensor.shape == (3, 16, 16)
    assert tensor.min() == -1 and tensor.max() == 1
    assert np.array_equal(np.asarray(tensor_to_pil(tensor)), pixels)
    assert np.array_equal(np.asarray(tensor_to_pil(tensor[None])), pixels)


def test_tensor_to_pil_clamps_and_rounds():
    tensor = torch.tensor([-3.0, -1.0, 0.0, 1.0, 5.0]).view(1, 1, 5).expand(3, 1, 5)
    assert np.asarray(tensor_to_pil(tensor))[0, :, 0].tolist() == [0, 0, 128, 255, 255]
    with pytest.raises(ValueError):
        tensor_to_pil(torch.zeros(4, 8, 8))


def _ties_at_half_levels() -> np.ndarray:
    """float32 values x whose (x + 1) * 127.5, in float32, is exactly k + 0.5 (a rounding
    tie), for the levels k from -3 to 257 that have one (64 and up: below, x + 1 is exact
    and 127.5 times it never lands on a half)."""
    found = []
    for k in range(-3, 258):
        x = np.float32((k + 0.5) / 127.5 - 1)
        for _ in range(4):
            x = np.nextafter(x, np.float32(-np.inf))
        for _ in range(9):
            if (x + np.float32(1)) * np.float32(127.5) == np.float32(k + 0.5):
                found.append(x)
                break
            x = np.nextafter(x, np.float32(np.inf))
    return np.array(found, dtype=np.float32)


def _oracle_8bit(x: np.ndarray) -> np.ndarray:
    """The reference's rounding in numpy float32 (np.round: ties to even, as torch.round)."""
    scaled = (x.astype(np.float32) + np.float32(1)) * np.float32(127.5)
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_batch_conversion_is_bit_identical_to_the_reference_rounding(dtype):
    ties = _ties_at_half_levels()
    assert len(ties) > 150 and ties.max() > 1  # ties at most levels, some out of range
    levels = _oracle_8bit(ties[ties < 1])
    assert np.all(levels % 2 == 0) and len(set(levels.tolist())) > 90  # ties to even: 64.5 -> 64, 65.5 -> 66
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(5, 3, 16, 20, generator=generator) * 1.5  # a third out of [-1, 1]
    flat = batch.view(-1)
    flat[: len(ties)] = torch.from_numpy(ties)  # exact ties in picture 0 (and 1)
    flat[-5:] = torch.tensor([-1.0, 1.0, -7.0, 7.0, 0.0])  # 0 -> 127.5, a tie in every dtype
    batch = batch.to(dtype)
    pictures = batch_to_pil(batch)
    assert len(pictures) == 5
    for picture, image in zip(pictures, batch):
        expected = _oracle_8bit(image.float().permute(1, 2, 0).numpy())
        assert picture.mode == "RGB" and picture.size == (20, 16)
        assert np.array_equal(np.asarray(picture), expected)
        assert picture.tobytes() == tensor_to_pil(image).tobytes()
    # The GPU's path, one batch rounded at once, runs the same operations: here on the CPU.
    at_once = images._pixels_at_once(batch)
    assert at_once.dtype == torch.uint8 and at_once.shape == (5, 16, 20, 3)
    assert np.array_equal(at_once.numpy(), _oracle_8bit(batch.float().permute(0, 2, 3, 1).numpy()))


def test_batch_to_pil_refuses_other_shapes():
    with pytest.raises(ValueError, match="B, 3, H, W"):
        batch_to_pil(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="B, 3, H, W"):
        batch_to_pil(torch.zeros(2, 4, 8, 8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batch_conversion_on_the_gpu_equals_the_cpu():
    batch = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 1.5
    batch.view(-1)[:300] = torch.from_numpy(_ties_at_half_levels()[:300])
    on_gpu = batch_to_pil(batch.cuda())
    for picture, expected in zip(on_gpu, batch_to_pil(batch)):
        assert picture.tobytes() == expected.tobytes()


# --------------------------------------------------------------------------- metadata

META = {
    "prompt": "a corgi, wearing a hat",
    "negative_prompt": "blurry",
    "steps": 100,
    "sampler": "ddpm",
    "scale": 3.0,
    "seed": 42,
    "size": 256,
    "model": "glide-base",
    "model_hash": "abc123",
}


def test_parameters_text_format():
    assert build_parameters_text(META) == (
        "a corgi, wearing a hat\n"
        "Negative prompt: blurry\n"
        "Steps: 100, Sampler: ddpm, CFG scale: 3, Seed: 42, Size: 256x256, "
        "Model: glide-base, Model hash: abc123"
    )


def test_parameters_text_quotes_and_omits():
    text = build_parameters_text({"prompt": "x", "scale": 2.5, "model": 'my, "best" model', "size": [64, 32]})
    assert text == 'x\nCFG scale: 2.5, Size: 64x32, Model: "my, \\"best\\" model"'
    assert "Negative prompt" not in text
    assert build_parameters_text({"prompt": "only"}) == "only"


def test_parameters_text_parses_back():
    parsed = parse_parameters_text(build_parameters_text({**META, "model": "a, b"}))
    assert parsed["prompt"] == META["prompt"]
    assert parsed["negative_prompt"] == "blurry"
    assert parsed["steps"] == 100 and parsed["scale"] == 3 and parsed["seed"] == 42
    assert parsed["size"] == "256x256" and parsed["model"] == "a, b" and parsed["model_hash"] == "abc123"


def test_metadata_round_trip_ascii_uses_text_chunks(tmp_path):
    path = write_png(Image.new("RGB", (8, 8)), tmp_path / "a.png", META)
    assert read_png_metadata(path) == META
    chunks = png_chunk_types(path)
    assert (b"tEXt", b"parameters") in chunks and (b"tEXt", b"glide") in chunks


def test_metadata_round_trip_unicode_uses_itxt(tmp_path):
    meta = {**META, "prompt": "帽子をかぶったコーギー 🐶", "negative_prompt": "ぼやけた"}
    path = write_png(Image.new("RGB", (8, 8)), tmp_path / "jp.png", meta)
    assert read_png_metadata(path) == meta
    chunks = png_chunk_types(path)
    assert (b"iTXt", b"parameters") in chunks and (b"iTXt", b"glide") in chunks
    with Image.open(path) as image:
        assert image.text["parameters"].startswith("帽子をかぶったコーギー 🐶\nNegative prompt: ぼやけた\n")
        assert json.loads(image.text["glide"]) == meta


def test_metadata_falls_back_to_parameters(tmp_path):
    path = tmp_path / "a1111.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512")
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    assert read_png_metadata(path) == {
        "prompt": "a cat", "steps": 20, "sampler": "Euler a", "scale": 7, "seed": 1, "size": "512x512",
    }


def test_metadata_of_plain_png_is_empty(tmp_path):
    path = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(path)
    assert read_png_metadata(path) == {}


def test_metadata_errors(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        read_png_metadata(tmp_path / "missing.png")
    jpeg = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8)).save(jpeg)
    with pytest.raises(ImageError, match="not a PNG") as error:
        read_png_metadata(jpeg)
    assert_one_line_naming(error, jpeg)
    text = tmp_path / "text.png"
    text.write_text("hello")
    with pytest.raises(ImageError, match="not a PNG"):
        read_png_metadata(text)


# --------------------------------------------------------------------------- writing


def test_write_creates_parents_and_returns_path(tmp_path):
    target = tmp_path / "deep" / "er" / "out.png"
    assert write_png(Image.new("RGB", (8, 8), RED), target, {"prompt": "p"}) == target
    with Image.open(target) as image:
        assert image.getpixel((0, 0)) == RED
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.png"]


def test_written_file_gets_normal_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        path = write_png(Image.new("RGB", (8, 8)), tmp_path / "p.png", {})
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_refuses_to_overwrite_unless_asked(tmp_path):
    path = write_png(Image.new("RGB", (8, 8), RED), tmp_path / "x.png", {"prompt": "first"})
    with pytest.raises(ImageError, match="--overwrite") as error:
        write_png(Image.new("RGB", (8, 8), BLUE), path, {"prompt": "second"})
    assert_one_line_naming(error, path)
    assert read_png_metadata(path)["prompt"] == "first"
    write_png(Image.new("RGB", (8, 8), BLUE), path, {"prompt": "second"}, overwrite=True)
    assert read_png_metadata(path)["prompt"] == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_no_clobber_when_file_appears_during_write(tmp_path, monkeypatch):
    path = tmp_path / "race.png"
    real_save = Image.Image.save

    def save_then_competitor_writes(self, fp, *args, **kwargs):
        real_save(self, fp, *args, **kwargs)
        path.write_bytes(b"someone else's")

    monkeypatch.setattr(Image.Image, "save", save_then_competitor_writes)
    with pytest.raises(ImageError, match="already exists"):
        write_png(Image.new("RGB", (8, 8)), path, {})
    assert path.read_bytes() == b"someone else's"
    assert [p.name for p in tmp_path.iterdir()] == ["race.png"]


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failed_write_leaves_nothing(tmp_path, monkeypatch, failure):
    def partial_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG partial")
        raise failure

    monkeypatch.setattr(Image.Image, "save", partial_save)
    target = tmp_path / "out.png"
    expected = ImageError if isinstance(failure, OSError) else KeyboardInterrupt
    with pytest.raises(expected) as error:
        write_png(Image.new("RGB", (8, 8)), target, {"prompt": "p"})
    if expected is ImageError:
        assert_one_line_naming(error, target)
        assert "No space left" in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_file(tmp_path, monkeypatch):
    target = write_png(Image.new("RGB", (8, 8), RED), tmp_path / "keep.png", {"prompt": "old"})
    monkeypatch.setattr(Image.Image, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(ImageError):
        write_png(Image.new("RGB", (8, 8)), target, {"prompt": "new"}, overwrite=True)
    assert read_png_metadata(target)["prompt"] == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_unwritable_locations(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    target = blocker / "out.png"
    with pytest.raises(ImageError, match="cannot create output directory") as error:
        write_png(Image.new("RGB", (8, 8)), target, {})
    assert_one_line_naming(error, blocker)
    with pytest.raises(ImageError, match="is a directory"):
        write_png(Image.new("RGB", (8, 8)), tmp_path, {})


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root ignores permissions")
def test_read_only_directory(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(ImageError, match="cannot write") as error:
            write_png(Image.new("RGB", (8, 8)), locked / "out.png", {})
        assert_one_line_naming(error, locked)
    finally:
        locked.chmod(0o700)


def test_permission_denied_is_reported(tmp_path, monkeypatch):
    # Root ignores directory permissions, so simulate what a read-only directory does.
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(ImageError, match="cannot write to directory .*Permission denied") as error:
        write_png(Image.new("RGB", (8, 8)), tmp_path / "out.png", {})
    assert_one_line_naming(error, tmp_path)


# --------------------------------------------------------------------------- naming


@pytest.mark.parametrize(
    ("prompt", "slug"),
    [
        ("A Corgi wearing a RED hat!", "a-corgi-wearing-a-red-hat"),
        ("  café   crème  ", "cafe-creme"),
        ("../../etc/passwd", "etc-passwd"),
        ("帽子をかぶったコーギー", "untitled"),
        ("", "untitled"),
        ("!!!", "untitled"),
    ],
)
def test_slugify(prompt, slug):
    assert slugify(prompt) == slug


def test_slugify_cuts_at_a_word():
    slug = slugify("an oil painting of a corgi wearing a party hat on the moon", max_len=30)
    assert slug == "an-oil-painting-of-a-corgi"
    assert slugify("x" * 100, max_len=10) == "x" * 10


def test_png_out_is_the_file():
    assert render_output_path("pics/corgi.png", index=0, seed=7, prompt="p", count=1) == Path("pics/corgi.png")
    names = [render_output_path("corgi.png", index=i, seed=7 + i, prompt="p", count=12).name for i in (0, 11)]
    assert names == ["corgi-00.png", "corgi-11.png"]


def test_directory_out_uses_pattern():
    path = render_output_path("outputs", index=3, seed=42, prompt="A corgi", count=4)
    assert path == Path("outputs/00003-42-a-corgi.png")
    custom = render_output_path(Path("o"), index=1, seed=2, prompt="x", pattern="{seed}_{prompt_hash}", count=1)
    assert custom.parent == Path("o") and custom.name.startswith("2_") and custom.suffix == ".png"
    assert len(custom.stem) == len("2_") + 8


@pytest.mark.parametrize("pattern", ["{steps}.png", "{}.png", "{slug.upper}.png", "{seed[0]}.png"])
def test_unknown_pattern_fields(pattern):
    with pytest.raises(ImageError, match="allowed: index, seed, slug, prompt_hash"):
        render_output_path("out", index=0, seed=1, prompt="p", pattern=pattern, count=1)


@pytest.mark.parametrize("pattern", ["{index", "{slug:05d}.png"])
def test_malformed_patterns(pattern):
    with pytest.raises(ImageError, match="bad output pattern"):
        render_output_path("out", index=0, seed=1, prompt="p", pattern=pattern, count=1)


def test_other_image_suffix_is_refused():
    with pytest.raises(ImageError, match="PNG files only"):
        render_output_path("corgi.jpg", index=0, seed=1, prompt="p", count=1)


def test_next_free_index(tmp_path):
    assert next_free_index(tmp_path / "missing") == 0
    assert next_free_index(tmp_path) == 0
    for name in ("00002-1-a.png", "00010-5-b.png", "notes.png", "00099.txt"):
        (tmp_path / name).touch()
    assert next_free_index(tmp_path) == 11
