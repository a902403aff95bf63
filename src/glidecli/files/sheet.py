"""A contact sheet: pictures in a grid with their axes' labels drawn above the columns and
left of the rows, in Pillow's own font (nothing to download). Small pictures are enlarged
(by whole factors, nearest neighbour) to at least MIN_CELL pixels, so a sheet of 64x64
pictures can be read."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
GAP = 6
MIN_CELL = 128


def contact_sheet(
    pictures: Sequence[Sequence[Image.Image]], x_labels: Sequence[str], y_labels: Sequence[str] | None, title: str = ""
) -> Image.Image:
    """`pictures[row][column]`, labelled: `x_labels` above the columns, `y_labels` (if any)
    left of the rows, `title` above all. Every cell gets the largest picture's box."""
    font = ImageFont.load_default(size=14)
    side = max(max(p.width, p.height) for row in pictures for p in row)
    factor = max(1, math.ceil(MIN_CELL / side))
    cells = [[p.convert("RGB").resize((p.width * factor, p.height * factor), Image.Resampling.NEAREST) for p in row] for row in pictures]
    cell_w = max(max(p.width for row in cells for p in row), *(_width(font, label) + GAP for label in x_labels))
    cell_h = max(p.height for row in cells for p in row)
    text_h = _height(font) + 2 * GAP
    left = (max(_width(font, label) for label in y_labels) + 2 * GAP) if y_labels else 0
    top = text_h * (2 if title else 1)
    width = max(left + len(x_labels) * (cell_w + GAP) + GAP, _width(font, title) + 2 * GAP)
    sheet = Image.new("RGB", (width, top + len(cells) * (cell_h + GAP) + GAP), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((GAP, GAP), title, fill=INK, font=font)
    for i, label in enumerate(x_labels):
        x = left + GAP + i * (cell_w + GAP)
        draw.text((x + (cell_w - _width(font, label)) // 2, top - text_h + GAP), label, fill=INK, font=font)
    for j, row in enumerate(cells):
        y = top + GAP + j * (cell_h + GAP)
        if y_labels:
            draw.text((GAP, y + (cell_h - _height(font)) // 2), y_labels[j], fill=INK, font=font)
        for i, picture in enumerate(row):
            x = left + GAP + i * (cell_w + GAP)
            sheet.paste(picture, (x + (cell_w - picture.width) // 2, y + (cell_h - picture.height) // 2))
    return sheet


def _width(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str) -> int:
    if not text:
        return 0
    box = font.getbbox(text)
    return int(box[2] - box[0])


def _height(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> int:
    return int(font.getbbox("Ag")[3])
