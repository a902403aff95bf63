"""Pictures of other sizes and aspect ratios than the models were trained on.

GLIDE's U-Nets are convolutional and their attention takes any number of tokens, so they
run on any height and width the network can halve at each of its levels: a multiple of
2^(levels - 1), 8 for the 64x64 base model, 32 for the 256x256 upsampler. How far the
pictures can stray from the training size before they fall apart is a matter of quality,
not of the code; the range allowed here, half to twice the training size on each side,
is where the results stay usable (README.md, "Other sizes").

A two-stage picture of W x H is made by the base model at W/r x H/r, r being the
upsampler's factor (its size over the base model's: 4 for GLIDE's), then upsampled.
"""

from __future__ import annotations

from ..nets.config import UNetConfig

# Each side between MIN_FACTOR and MAX_FACTOR times the model's training size.
MIN_FACTOR, MAX_FACTOR = 0.5, 2.0


def side_multiple(arch: UNetConfig) -> int:
    """What every side must be a multiple of: the U-Net halves it at each level but the last."""
    # int ** int is typed Any (a negative exponent gives a float); the exponent here is >= 0.
    multiple: int = 2 ** (len(arch.channel_mult) - 1)
    return multiple


def side_range(arch: UNetConfig) -> tuple[int, int]:
    """The smallest and largest side allowed for `arch`, both multiples of side_multiple."""
    step = side_multiple(arch)
    low = max(step, -(-int(arch.image_size * MIN_FACTOR) // step) * step)
    return low, int(arch.image_size * MAX_FACTOR) // step * step


def check_side(arch: UNetConfig, side: int, what: str) -> None:
    """ValueError (one line) unless `side` suits a network of `arch`."""
    step = side_multiple(arch)
    low, high = side_range(arch)
    if side % step or not low <= side <= high:
        raise ValueError(
            f"{what} is {side}, but the model ({arch.image_size}x{arch.image_size}) takes sides that are multiples"
            f" of {step} from {low} to {high}"
        )


def stage_sizes(
    width: int | None, height: int | None, base: UNetConfig, upsampler: UNetConfig | None
) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """(base, upsampler) stage sizes as (height, width) for a picture of `width` x `height`
    (None: the final stage's training size), or (None, None) for the models' own squares.
    Raises ValueError with a one-line reason when a side does not fit."""
    if width is None and height is None:
        return None, None
    final = upsampler if upsampler is not None else base
    width = final.image_size if width is None else width
    height = final.image_size if height is None else height
    if upsampler is None:
        check_side(base, width, "the width")
        check_side(base, height, "the height")
        return (height, width), None
    factor = upsampler.image_size // base.image_size
    for side, name in ((width, "width"), (height, "height")):
        low, high = side_range(base)
        step = side_multiple(base)
        if side % factor or side // factor % step or not low <= side // factor <= high:
            raise ValueError(
                f"the {name} is {side}, but with the {factor}x upsampler sides must be multiples of {factor * step} from"
                f" {factor * low} to {factor * high} ({factor} times the base model's: multiples of {step} from {low} to {high})"
            )
        check_side(upsampler, side, f"the {name}")
    return (height // factor, width // factor), (height, width)


def layout_picture_problem(width: int, height: int, side: int) -> str | None:
    """Why a width x height picture cannot be inverted by a decoder of side x side pictures
    (unCLIP's --keep-layout), or None: it is resized to the decoder's square, so it must be
    square (stretching would move the layout) and at least MIN_FACTOR of the side (an enlarged
    picture has no detail left to keep)."""
    if width != height:
        return f"--keep-layout inverts the decoder, which draws {side}x{side} squares, but the picture is {width}x{height}: crop it square first"
    if width < side * MIN_FACTOR:
        return f"--keep-layout inverts the decoder at {side}x{side}, but the picture is only {width}x{height}: give one of at least {int(side * MIN_FACTOR)}x{int(side * MIN_FACTOR)}"
    return None
