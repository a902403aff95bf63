"""Every option of the rendering commands, declared once: its flags, its type, its limits and
its help. The CLI builds its flags from these declarations and the server reads JSON by the
same names, so each rule, and each message, exists once (request/values.py converts and
checks every value).
"""

from __future__ import annotations

import re

from ..diffusion.vocabulary import MAX_SEED, SAMPLER_NAMES
from ..files.vocabulary import ANIMATION_FORMATS, FIT_MODES, IMAGE_FORMATS, LOSSLESS_QUALITY
from ..render.defaults import MAX_CANVAS, UPSAMPLE_TEMPERATURE
from ..render.prompt_syntax import Emphasis
from .values import CANVAS, IMG2IMG, MODELS, OUTPUT, PRIOR, UPSAMPLING, Option, ValueType

INPAINT_FIT_MODES = ("auto", "region", *FIT_MODES)  # glide inpaint's --fit (request/edits.py)


# --- the options the rendering commands share --------------------------------------------------

PROMPT_HELP = "What to draw."
LITERAL_PROMPT = Option(
    ("--literal-prompt",), ValueType.BOOL,
    "Read the prompts as plain text: no (emphasis:1.2), [less], {wild|cards}, __files__ or <tags> (docs/prompts.md).", panel=None,
)
EMPHASIS = Option(
    ("--emphasis",), ValueType.STR,
    "How a weight, (word:1.3), acts on its words' features: a1111 multiplies them and restores the sequence's mean (A1111's);"
    " comfy moves them from the empty prompt's (ComfyUI's), which keeps the rest of the prompt as it was (docs/prompts.md).",
    panel=None, choices=tuple(method.value for method in Emphasis),
)
WILDCARDS = Option(
    ("--wildcards",), ValueType.PATH,
    "Folder of the __name__ wildcards' name.txt files (default $GLIDE_WILDCARDS); a server reads its own $GLIDE_WILDCARDS.",
    panel=None, optional=True, metavar="DIR", show_default=False,
)
NEGATIVE = Option(("--negative", "--negative-prompt"), ValueType.STR, "Replaces the empty prompt of the unguided half (classifier-free guidance).", optional=True)
SCALE = Option(("--scale", "--cfg-scale"), ValueType.FLOAT, "Classifier-free guidance scale (1 = off).", minimum=0.0)
STEPS = Option(
    ("--steps",), ValueType.STR,
    "Base steps: a count ('20'); ddpm/ddim/plms also take sections ('10,10,5'), 'ddimN' or 'fast27'; solvers also 'logsnr20' or 'time20' (the grid). The reference's: --sampler ddpm --steps 100.",
)
SAMPLER = Option(("--sampler",), ValueType.STR, "Base sampler.", choices=SAMPLER_NAMES)
ETA = Option(("--eta",), ValueType.FLOAT, "DDIM noise (0 = deterministic); ddim only.", minimum=0.0)
THRESHOLD = Option(("--threshold",), ValueType.FLOAT, "Dynamic thresholding percentile of x0, e.g. 0.995 (off: clip to [-1, 1]).", optional=True)
UPSAMPLE_STEPS = Option(("--upsample-steps",), ValueType.STR, "Upsampler steps (same forms as --steps).", panel=UPSAMPLING)
UPSAMPLE_SAMPLER = Option(("--upsample-sampler",), ValueType.STR, "Upsampler sampler.", panel=UPSAMPLING, choices=SAMPLER_NAMES)
UPSAMPLE_TEMP = Option(("--upsample-temp",), ValueType.FLOAT, f"Scales the upsampler's starting noise (the reference uses {UPSAMPLE_TEMPERATURE}).", panel=UPSAMPLING, minimum=0.0)
SIZE = Option(
    ("--size",), ValueType.INT, "64: base model only; 256 (default): base then upsampler (sizes of the configured models).",
    panel=OUTPUT, optional=True, show_default=False,
)
WIDTH = Option(
    ("--width",), ValueType.INT,
    "Width of the pictures (default --size): with the upsampler a multiple of 32 from 128 to 512 for GLIDE's models (base model alone: of 8, from 32 to 128).",
    panel=OUTPUT, optional=True, show_default=False,
)
HEIGHT = Option(("--height",), ValueType.INT, "Height of the pictures (as --width).", panel=OUTPUT, optional=True, show_default=False)
NUM = Option(("-n", "--num"), ValueType.INT, "Images per prompt; image i uses seed + i.", panel=OUTPUT, minimum=1)
BATCH_SIZE = Option(
    ("--batch-size",), ValueType.BATCH,
    "Images through the network at once: auto (on a GPU the most that fit its free memory, measured; on the CPU 1) or a number. Does not change the images.",
    panel=OUTPUT, metavar="auto|N",
)
SEED = Option(
    ("--seed",), ValueType.INT, "Seed of the first image (random when omitted; always printed and recorded).",
    panel=OUTPUT, minimum=0, maximum=MAX_SEED, optional=True, show_default=False,
)
FORMAT = Option(
    ("--format",), ValueType.STR,
    "File format of the pictures, each with its settings recorded (PNG text chunks; JPEG and WebP EXIF and XMP). Default: the suffix of an --out file name (.jpg, .webp), else png.",
    panel=OUTPUT, choices=tuple(kind.value for kind in IMAGE_FORMATS), optional=True, show_default=False,
)
QUALITY = Option(
    ("--quality",), ValueType.INT,
    f"JPEG and WebP quality, 0-{LOSSLESS_QUALITY} (OpenAI's output_compression); WebP at {LOSSLESS_QUALITY} is lossless (the same pixels as the PNG). PNG is always lossless.",
    panel=OUTPUT, minimum=0, maximum=LOSSLESS_QUALITY,
)
FIT = Option(("--fit",), ValueType.STR, "Making the picture square: crop (centre), pad (black borders, kept), stretch.", choices=FIT_MODES)
BASE_MODEL = Option(("--model",), ValueType.STR, "Base model (manifest name).", panel=MODELS, optional=True)
UPSAMPLE_MODEL = Option(("--upsample-model",), ValueType.STR, "Upsampler (manifest name).", panel=MODELS, optional=True)
INPAINT_MODEL = Option(("--model",), ValueType.STR, "Base inpainting model (manifest name).", panel=MODELS, optional=True)
INPAINT_UPSAMPLE_MODEL = Option(("--upsample-model",), ValueType.STR, "Inpainting upsampler (manifest name).", panel=MODELS, optional=True)

# --- img2img and best of N (glide generate) ------------------------------------------------------

INIT_IMAGE = Option(
    ("--init-image",), ValueType.PICTURE, "Start from this picture instead of pure noise (img2img); needs --strength and/or --upsample-strength.",
    panel=IMG2IMG, optional=True, show_default=False,
)
STRENGTH = Option(
    ("--strength",), ValueType.FLOAT,
    "How much of the init picture the base model redraws, 0 < S <= 1 (1: plain generation). It is noised to the timestep at fraction S of the schedule and sampled from there.",
    panel=IMG2IMG, optional=True, show_default=False,
)
UPSAMPLE_STRENGTH = Option(
    ("--upsample-strength",), ValueType.FLOAT,
    "The upsampler too starts from the init picture (meant for one at the upsampler's size), noised at this strength. Without --strength the base model does not run: the upsampler alone redraws the picture.",
    panel=IMG2IMG, optional=True, show_default=False,
)
INIT_FIT = Option(("--init-fit",), ValueType.STR, "Fitting the init picture to the size made: crop (centre), pad (black borders), stretch.", panel=IMG2IMG, choices=FIT_MODES)
BEST_OF = Option(
    ("--best-of",), ValueType.INT, "Draw N candidates per picture (from its seed) and keep the one --rank-model scores highest for the prompt.", minimum=1
)
RANK_MODEL = Option(
    ("--rank-model",), ValueType.STR,
    "Judge for --best-of: a manifest's OpenCLIP model by name, an open_clip NAME:PRETRAINED (or NAME:FILE, hf-hub:REPO), or 'noised-clip' (GLIDE's noised CLIP at t=0, no extra download).",
    panel=MODELS, optional=True,
)

# --- CLIP guidance ---------------------------------------------------------------------------------

CLIP_SCALE = Option(("--clip-scale",), ValueType.FLOAT, "Strength of the CLIP gradient.", minimum=0.0)
CLIP_IMAGE_MODEL = Option(("--clip-image-model",), ValueType.STR, "Noised CLIP image encoder.", panel=MODELS, optional=True)
CLIP_TEXT_MODEL = Option(("--clip-text-model",), ValueType.STR, "Noised CLIP text encoder.", panel=MODELS, optional=True)

# --- pictures in -----------------------------------------------------------------------------------

IMAGE = Option((), ValueType.PICTURE, "The picture.", name="image")
MASK = Option((), ValueType.PICTURE, "The mask, the size of IMAGE: WHITE = repaint, black = keep.", optional=True, name="mask")
IMAGE_A = Option((), ValueType.PICTURE, "The picture at --mix 0.", name="image-a")
IMAGE_B = Option((), ValueType.PICTURE, "The picture at --mix 1.", name="image-b")

# --- glide upsample --------------------------------------------------------------------------------

UPSAMPLE_ONLY_STEPS = Option(("--upsample-steps", "--steps"), ValueType.STR, "Steps: a count, sections, 'ddimN' or 'fast27' (the reference's, with ddim).")
UPSAMPLE_ONLY_SAMPLER = Option(("--upsample-sampler", "--sampler"), ValueType.STR, "Sampler.", choices=SAMPLER_NAMES)
UPSAMPLE_ONLY_TEMP = Option(("--upsample-temp", "--temp"), ValueType.FLOAT, "Scales the starting noise.", minimum=0.0)
UPSAMPLE_ONLY_MODEL = Option(("--upsample-model", "--model"), ValueType.STR, "Upsampler (manifest name).", panel=MODELS, optional=True)

# --- glide inpaint -----------------------------------------------------------------------------------

INVERT_MASK = Option(("--invert-mask",), ValueType.BOOL, "Repaint the black (or opaque) part instead.")
INPAINT_FIT = Option(
    ("--fit",), ValueType.STR,
    "auto: 'region' for pictures larger than the model's output, else 'crop'. region: repaint a square around the"
    " mask at the models' size and paste it back feathered; the picture keeps its size and every other pixel."
    " crop/pad/stretch: fit the whole picture to the model's square (the output is that square).",
    choices=INPAINT_FIT_MODES,
)
REGION_CONTEXT = Option(("--context",), ValueType.INT, "--fit region: pixels of the picture around the mask that the models see.", minimum=0, maximum=MAX_CANVAS)
FEATHER = Option(("--feather",), ValueType.INT, "--fit region: pixels over which the repainted region fades into the picture around the mask.", minimum=0, maximum=256)

# --- glide outpaint ----------------------------------------------------------------------------------


def side(flag: str) -> Option:
    return Option((flag,), ValueType.INT, "Pixels to add on this side.", panel=CANVAS, minimum=0, maximum=MAX_CANVAS)


LEFT, RIGHT, TOP, BOTTOM = (side(flag) for flag in ("--left", "--right", "--top", "--bottom"))
TO = Option(("--to",), ValueType.STR, "The canvas size instead of the four sides; the picture stays centred.", panel=CANVAS, optional=True, metavar="WxH")
WINDOW_CONTEXT = Option(
    ("--context",), ValueType.INT, "Pixels of each window already painted, towards the picture (default: half the window's shorter side).",
    panel=CANVAS, minimum=1, optional=True, show_default=False,
)
WINDOW_SIZE = Option(
    ("--size",), ValueType.INT, "Window size: the base model's (64: base model only) or the upsampler's (256, default).",
    panel=OUTPUT, optional=True, show_default=False,
)
WINDOW = Option(
    ("--window",), ValueType.STR,
    "Rectangular windows instead of the models' squares, sides as glide generate's --width/--height (e.g. 384x256; with --size 64 of the base model's).",
    panel=CANVAS, optional=True, metavar="WxH", show_default=False,
)

# --- unCLIP ---------------------------------------------------------------------------------------------

PRIOR_SCALE = Option(("--prior-scale",), ValueType.FLOAT, "Classifier-free guidance of the prior (1 = off).", panel=PRIOR, minimum=0.0)
PRIOR_STEPS = Option(("--prior-steps",), ValueType.STR, "Prior steps (same forms as --steps).", panel=PRIOR)
PRIOR_SAMPLER = Option(("--prior-sampler",), ValueType.STR, "Prior sampler.", panel=PRIOR, choices=SAMPLER_NAMES)
DECODER_SCALE = Option(("--scale", "--cfg-scale"), ValueType.FLOAT, "Classifier-free guidance of the decoder (1 = off).", minimum=0.0)
DECODER_STEPS = Option(
    ("--steps",), ValueType.STR, "Decoder steps: a count ('25'); ddpm/ddim/plms also take sections ('10,10,5') or 'ddimN'; solvers also 'logsnr20'/'time20'."
)
DECODER_SAMPLER = Option(("--sampler",), ValueType.STR, "Decoder sampler.", choices=SAMPLER_NAMES)
SR_STEPS = Option(("--sr-steps",), ValueType.STR, "Super-resolution steps (same forms as --steps); the last always runs the fine-tuned last-step U-Net.")
SR_SAMPLER = Option(("--sr-sampler",), ValueType.STR, "Super-resolution sampler.", choices=SAMPLER_NAMES)
UNCLIP_SIZE = Option(("--size",), ValueType.INT, "64: the decoder's pictures; 256 (default): then super-resolution.", panel=OUTPUT, optional=True, show_default=False)
PRIOR_MODEL = Option(("--prior-model",), ValueType.STR, "unCLIP prior (manifest name).", panel=MODELS, optional=True)
DECODER_MODEL = Option(("--decoder-model",), ValueType.STR, "unCLIP decoder (manifest name).", panel=MODELS, optional=True)
SR_MODEL = Option(("--sr-model",), ValueType.STR, "unCLIP super-resolution (manifest name).", panel=MODELS, optional=True)
CLIP_MODEL = Option(("--clip-model",), ValueType.STR, "CLIP ViT the networks were trained with (manifest name).", panel=MODELS, optional=True)
CLIP_STATS = Option(("--clip-stats",), ValueType.STR, "The prior's CLIP embedding statistics (manifest name).", panel=MODELS, optional=True)
DECODER_PROMPT = Option(("--prompt",), ValueType.STR, "Text for the decoder (empty by default, as the reference's variations).")
MIX = Option(("--mix",), ValueType.FLOAT, "Where between A (0) and B (1); default 0.5.", minimum=0.0, maximum=1.0, optional=True, show_default=False)
EDITS = "Text diffs and layout (unCLIP)"
TOWARD = Option(
    ("--toward",), ValueType.STR,
    "A text diff (the unCLIP paper's section 3.3): turn the picture's CLIP image embedding toward this new caption.",
    panel=EDITS, optional=True, show_default=False,
)
AWAY = Option(
    ("--away",), ValueType.STR, "The picture's caption, which --toward moves away from (default: the prompt its PNG records).",
    panel=EDITS, optional=True, show_default=False,
)
AMOUNT = Option(
    ("--amount",), ValueType.FLOATS,
    "How far toward --toward, 0 to 1 (the paper uses 0.25-0.5; default 0.5); several (0,0.25,0.5) give one picture each.",
    panel=EDITS, minimum=0.0, maximum=1.0, optional=True, show_default=False, metavar="A[,B...]",
)
KEEP_LAYOUT = Option(
    ("--keep-layout",), ValueType.BOOL,
    "Decode from the DDIM inversion of the picture (IMAGE_A for blend) instead of fresh noise, so its layout stays:"
    " the decoder samples ddim with eta 0; the inversion costs 1 + --layout-refine decoder passes, once per picture.",
    panel=EDITS,
)
LAYOUT_REFINE = Option(
    ("--layout-refine",), ValueType.INT,
    "--keep-layout: fixed-point refinements of each inversion step, each one more decoder pass (0: the usual DDIM inversion; more: closer to the picture).",
    panel=EDITS, minimum=0, maximum=20,
)
FRAMES = Option(("--frames",), ValueType.INT, "A sequence of N pictures from A to B with one seed (instead of --mix).", minimum=2, optional=True)

# --- animations ------------------------------------------------------------------------------------------

ANIMATE = Option(
    ("--animate",), ValueType.STR, "Also write the frames (--frames, --seed-walk, several --amount values) as one animated picture beside the first frame.",
    panel=OUTPUT, choices=tuple(ANIMATION_FORMATS), optional=True, show_default=False,
)
SEED_WALK = Option(
    ("--seed-walk",), ValueType.INT,
    "N frames whose noise turns a full circle from the seed's towards seed + 1's (a latent walk; frame 0 is the plain picture).",
    panel=OUTPUT, minimum=2, maximum=1000, optional=True, show_default=False,
)
SHOW_STEPS = Option(
    ("--show-steps",), ValueType.INT, "Also write each picture's clean-image estimate every N sampling steps, as frames and an animation (--animate, default gif).",
    panel=OUTPUT, minimum=1, optional=True, show_default=False,
)

# --- LoRA adapters (every rendering command) ---------------------------------------------------------

LORA = Option(
    ("--lora",), ValueType.ADAPTERS,
    "A LoRA adapter (PEFT's format): a manifest name (kind lora) or a folder, with an optional :WEIGHT (default 1). Repeat to stack adapters.",
    panel=MODELS, metavar="NAME[:WEIGHT]", show_default=False,
)
FORCE_LORA = Option(
    ("--force", "--lora-force"), ValueType.BOOL,
    "Apply --lora adapters recorded for another model (a fine-tune of the same architecture); shapes must still fit.", panel=MODELS,
)

# The options that say how many sampling steps a stage takes (a server caps their sum).
STEP_OPTIONS = (STEPS, UPSAMPLE_STEPS, UPSAMPLE_ONLY_STEPS, PRIOR_STEPS, DECODER_STEPS, SR_STEPS)


def step_count(spec: str) -> int:
    """How many steps a steps value asks for: its counts summed ('20' 20, '10,10,5' 25,
    'ddim50' 50, 'fast27' 27, 'logsnr20' 20)."""
    return sum(int(number) for number in re.findall(r"\d+", spec))
