"""Pictures in PNG, JPEG and WebP with their record (glidecli.files.pictures, metadata.py): the
record comes back from every format, WebP at quality 100 keeps the pixels, a PNG is written as
write_png always has, and A1111's `parameters` text is read from PNG chunks and from EXIF as
A1111 writes it (piexif, the library A1111 writes it with, is the oracle)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from glidecli.files.animation import animation_path
from glidecli.files.metadata import record_from_xmp, user_comment_text
from glidecli.files.parameters import parameter_items
from glidecli.files.pictures import (
    encode_picture,
    output_format,
    read_a1111_parameters,
    read_picture_record,
    write_picture,
)
from glidecli.files.pngfile import ImageError, next_free_index, read_png_metadata, render_output_path, write_png
from glidecli.files.vocabulary import ImageFormat

# A record with what breaks naive encodings: non-Latin text, XML's special characters, a
# quote and a comma, a file name that is not UTF-8 (a lone surrogate), nested values.
RECORD = {
    "prompt": 'a corgi in a "hat", 帽子 🐶 <b>&amp;</b>', "negative_prompt": "blurry\nlow quality", "seed": 7, "index": 2,
    "size": [96, 64], "model": "shapes", "scale": 3.0, "sampler": "dpmpp_2m", "steps": "20", "command": "generate",
    "init_image": "sk\udce9tch.png", "components": [{"prompt": "a", "weight": 1.5}],
}


@pytest.fixture
def picture() -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8))


def pixels(data: bytes | Path) -> np.ndarray:
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
        return np.asarray(image.convert("RGBA" if image.mode == "RGBA" else "RGB"))


@pytest.mark.parametrize("kind", list(ImageFormat))
@pytest.mark.parametrize("quality", [0, 75, 100])
def test_the_record_comes_back_from_every_format(tmp_path, picture, kind, quality):
    data = encode_picture(picture, RECORD, kind, quality)
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.format == kind.pillow and opened.size == picture.size
    assert read_picture_record(data) == RECORD
    path = write_picture(picture, tmp_path / f"p{kind.suffix}", RECORD, quality=quality)
    assert path.read_bytes() == data  # the format from the name; the same bytes as encode_picture
    assert read_picture_record(path) == RECORD


def test_a_png_is_what_write_png_writes(tmp_path, picture):
    written = write_png(picture, tmp_path / "old.png", RECORD).read_bytes()
    assert encode_picture(picture, RECORD, ImageFormat.PNG, 5) == written  # quality means nothing to PNG
    assert write_picture(picture, tmp_path / "new.png", RECORD).read_bytes() == written


def test_webp_at_quality_100_keeps_every_pixel(picture):
    lossless = encode_picture(picture, RECORD, ImageFormat.WEBP, 100)
    assert np.array_equal(pixels(lossless), np.asarray(picture))
    assert np.array_equal(pixels(lossless), pixels(encode_picture(picture, RECORD, ImageFormat.PNG)))
    lossy = encode_picture(picture, RECORD, ImageFormat.WEBP, 99)
    assert not np.array_equal(pixels(lossy), np.asarray(picture))
    # Transparency too, and the colour under transparent pixels.
    rgba = np.concatenate([np.asarray(picture), np.full((48, 40, 1), 255, np.uint8)], axis=2)
    rgba[:10, :, 3] = 0
    assert np.array_equal(pixels(encode_picture(Image.fromarray(rgba), {}, ImageFormat.WEBP, 100)), rgba)


def test_quality_sets_the_size_of_jpeg_and_webp(picture):
    for kind in (ImageFormat.JPEG, ImageFormat.WEBP):
        sizes = [len(encode_picture(picture, {}, kind, quality)) for quality in (10, 50, 95)]
        assert sizes == sorted(sizes) and sizes[0] < sizes[-1], (kind, sizes)


def test_jpeg_drops_transparency(picture):
    data = encode_picture(picture.convert("RGBA"), RECORD, ImageFormat.JPEG, 90)
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.mode == "RGB"


def test_quality_out_of_range_is_refused(tmp_path, picture):
    for quality in (-1, 101):
        with pytest.raises(ImageError, match="quality") as error:
            write_picture(picture, tmp_path / "q.jpg", RECORD, quality=quality)
        assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_a_record_too_large_for_a_jpeg_is_refused_whole(tmp_path, picture):
    huge = {**RECORD, "prompt": "x" * 70_000}
    with pytest.raises(ImageError, match="do not fit in a JPEG") as error:
        write_picture(picture, tmp_path / "big.jpg", huge)
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    assert read_picture_record(encode_picture(picture, huge, ImageFormat.WEBP)) == huge  # WebP holds it


def test_a_picture_without_a_record(tmp_path, picture):
    for kind in ImageFormat:
        path = tmp_path / f"plain{kind.suffix}"
        picture.save(path, format=kind.pillow)
        assert read_picture_record(path) == {}
        assert read_a1111_parameters(path) is None


def test_what_is_not_a_picture_glide_reads(tmp_path, picture):
    gif = tmp_path / "a.gif"
    picture.save(gif)
    with pytest.raises(ImageError, match="is a GIF file, not a PNG, JPEG or WebP") as error:
        read_picture_record(gif)
    assert str(gif) in str(error.value) and "\n" not in str(error.value)
    text = tmp_path / "t.jpg"
    text.write_text("hello")
    with pytest.raises(ImageError, match="not a PNG, JPEG or WebP image"):
        read_picture_record(text)
    with pytest.raises(ImageError, match="not found"):
        read_picture_record(tmp_path / "missing.webp")
    with pytest.raises(ImageError, match="the picture is not a PNG, JPEG or WebP image"):
        read_picture_record(b"not a picture")
    # read_png_metadata stays a PNG's reader, with its own messages.
    jpeg = write_picture(picture, tmp_path / "p.jpg", RECORD)
    with pytest.raises(ImageError, match="is a JPEG file, not a PNG"):
        read_png_metadata(jpeg)


def test_a_damaged_or_foreign_xmp_holds_no_record():
    assert record_from_xmp(b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><unclosed>") is None
    assert record_from_xmp(b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>") is None
    assert record_from_xmp(None) is None


# --------------------------------------------------------------------------- A1111's text

A1111_TEXT = "a cat, (sitting:1.2)\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model: \"v1, 5\""


def test_parameter_items_are_the_labels_as_written():
    assert parameter_items(A1111_TEXT) == {
        "Prompt": "a cat, (sitting:1.2)", "Negative prompt": "dog", "Steps": "20", "Sampler": "Euler a", "CFG scale": "7",
        "Seed": "1", "Size": "512x512", "Model": "v1, 5",
    }
    assert parameter_items("just a prompt") == {"Prompt": "just a prompt"}


def test_a1111_png_parameters(tmp_path):
    path = tmp_path / "a1111.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", A1111_TEXT)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    found = read_a1111_parameters(path)
    assert found is not None and found.text == A1111_TEXT and found.items["Sampler"] == "Euler a"
    assert read_a1111_parameters(path.read_bytes()) == found
    assert read_picture_record(path)["sampler"] == "Euler a"  # not a glide record: the text parsed


@pytest.mark.parametrize("kind", ["JPEG", "WEBP"])
def test_a1111_exif_user_comment_as_a1111_writes_it(tmp_path, kind):
    piexif = pytest.importorskip("piexif")
    import piexif.helper

    path = tmp_path / f"a1111.{kind.lower()}"
    Image.new("RGB", (16, 16), (200, 10, 10)).save(path, format=kind, quality=80)
    text = A1111_TEXT.replace("a cat", "a cat 猫")
    comment = piexif.helper.UserComment.dump(text, encoding="unicode")
    piexif.insert(piexif.dump({"Exif": {piexif.ExifIFD.UserComment: comment}}), str(path))
    found = read_a1111_parameters(path)
    assert found is not None and found.text == text
    assert found.items["Prompt"] == "a cat 猫, (sitting:1.2)" and found.items["Model"] == "v1, 5" and found.items["Negative prompt"] == "dog"
    assert read_picture_record(path)["seed"] == 1


@pytest.mark.parametrize("kind", [ImageFormat.JPEG, ImageFormat.WEBP])
def test_a1111_reads_glides_text(picture, kind):
    piexif = pytest.importorskip("piexif")
    import piexif.helper

    data = encode_picture(picture, RECORD, kind, 90)
    with Image.open(io.BytesIO(data)) as opened:
        exif = piexif.load(opened.info["exif"])
    text = piexif.helper.UserComment.load(exif["Exif"][piexif.ExifIFD.UserComment])
    found = read_a1111_parameters(data)
    assert found is not None and text == found.text
    assert text.startswith(RECORD["prompt"] + "\nNegative prompt: blurry\nlow quality\nSteps: 20, Sampler: dpmpp_2m, CFG scale: 3, Seed: 7, Size: 96x64")


def test_user_comment_codes():
    text = "Steps: 20, 猫"
    assert user_comment_text(b"UNICODE\0" + text.encode("utf-16-be")) == text
    assert user_comment_text(b"UNICODE\0" + text.encode("utf-16-le")) == text  # some tools write the file's byte order
    assert user_comment_text(b"ASCII\0\0\0Steps: 20\0") == "Steps: 20"
    assert user_comment_text(b"\0" * 8 + "Steps: 猫".encode()) == "Steps: 猫"
    assert user_comment_text(b"short") is None and user_comment_text(None) is None


# --------------------------------------------------------------------------- names


def test_file_names_follow_the_format():
    name = render_output_path("outputs", index=3, seed=42, prompt="A corgi", count=4, image_format=ImageFormat.JPEG)
    assert name == Path("outputs/00003-42-a-corgi.jpg")
    webp = render_output_path("o", index=0, seed=1, prompt="x", pattern="{seed}-vary.png", count=1, image_format=ImageFormat.WEBP)
    assert webp == Path("o/1-vary.webp")
    assert render_output_path("o", index=0, seed=1, prompt="x", pattern="{seed}", count=1, image_format=ImageFormat.WEBP) == Path("o/1.webp")
    assert render_output_path("o", index=0, seed=1, prompt="x", pattern="{seed}.jpeg", count=1, image_format=ImageFormat.JPEG) == Path("o/1.jpeg")
    assert render_output_path("c.JPEG", index=0, seed=1, prompt="x", count=1, image_format=ImageFormat.JPEG) == Path("c.JPEG")
    several = [render_output_path("c.jpg", index=i, seed=1, prompt="x", count=3, image_format=ImageFormat.JPEG).name for i in range(3)]
    assert several == ["c-0.jpg", "c-1.jpg", "c-2.jpg"]


def test_an_out_name_of_another_format_is_refused():
    with pytest.raises(ImageError, match=r"--format webp writes WEBP files only; use a \.webp name, a directory or --format jpeg"):
        render_output_path("c.jpg", index=0, seed=1, prompt="x", count=1, image_format=ImageFormat.WEBP)
    with pytest.raises(ImageError, match="PNG, JPEG and WebP files only"):
        render_output_path("c.gif", index=0, seed=1, prompt="x", count=1)


def test_the_format_comes_from_the_choice_then_the_name(tmp_path):
    assert output_format(None, Path("outputs")) is ImageFormat.PNG
    (tmp_path / "shots.webp").mkdir()
    assert output_format(None, tmp_path / "shots.webp") is ImageFormat.PNG  # a folder's name is no file name
    assert output_format(None, Path("x.JPG")) is ImageFormat.JPEG
    assert output_format(None, "x.webp") is ImageFormat.WEBP
    assert output_format("png", "x.webp") is ImageFormat.PNG  # then render_output_path refuses the name


def test_numbering_continues_over_every_format(tmp_path):
    for name in ("00002-1-a.png", "00010-5-b.jpg", "00012-5-b.webp", "00099-x.gif", "00098.txt"):
        (tmp_path / name).touch()
    assert next_free_index(tmp_path) == 13


def test_an_animation_beside_a_webp_frame_takes_another_name():
    assert animation_path(Path("o/00000-7-a.png"), "webp") == Path("o/00000-7-a.webp")
    assert animation_path(Path("o/00000-7-a.webp"), "webp") == Path("o/00000-7-a-animation.webp")
    assert animation_path(Path("o/00000-7-a.webp"), "gif") == Path("o/00000-7-a.gif")
