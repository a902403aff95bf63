"""The captions that interrogation (A1111's /interrogate with model "clip") ranks for a
picture: every scene of the shapes data set (a colour, a shape, another background colour),
and "a photo of ..." for everyday subjects. CLIP picks the nearest; it cannot say what is
not among them (docs/serving.md)."""

from __future__ import annotations

import itertools

from ..train.shapes import SHAPE_COLOURS, SHAPES, shape_caption

SUBJECTS = (
    "a person", "a group of people", "a dog", "a cat", "a bird", "a horse", "a cow", "a sheep", "an elephant", "a bear",
    "a zebra", "a giraffe", "a fish", "a car", "a bus", "a truck", "a bicycle", "a motorcycle", "an airplane", "a train",
    "a boat", "a house", "a city street", "a bridge", "a mountain", "a beach", "a forest", "a field", "a lake", "the sea",
    "the sky", "a sunset", "a flower", "a tree", "a garden", "a room", "a kitchen", "a table", "a chair", "a bed",
    "a sofa", "a book", "a clock", "a vase", "a cup", "a bowl", "a bottle", "a plate of food", "a pizza", "a cake",
    "a fruit", "a banana", "an apple", "an orange", "a sandwich", "a computer", "a phone", "a television", "a painting",
    "a drawing", "a cartoon", "a pattern", "a logo", "text", "a toy", "a teddy bear", "a ball", "a hat", "a shoe",
)


def caption_candidates() -> list[str]:
    """Every caption interrogation ranks, shapes scenes first."""
    scenes = [shape_caption(colour, shape, background) for colour, shape, background in itertools.product(SHAPE_COLOURS, SHAPES, SHAPE_COLOURS)
              if colour != background]
    return scenes + [f"a photo of {subject}" for subject in SUBJECTS]
