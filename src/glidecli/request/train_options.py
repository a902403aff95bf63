"""Every option of `glide train`, declared once: its flags, its type, its limits, its help and
its panel. The requests of train.py declare their fields with them; the CLI builds its flags
from them in HELP_ORDER, handing typer the types and limits, which parses and checks them."""

from __future__ import annotations

from ..nets.config import PREDICTIONS
from ..render.defaults import DEVICES
from ..train.vocabulary import AMP_NAMES, MAX_SHAPE_SPREAD, PRESET_NAMES, SAVE_DTYPE_NAMES, TrainKind
from .values import Option, ValueType

# Help panels of `glide train --help` (None: typer's Options, or Arguments).
TRAINING = "Training"
SCHEDULE = "Checkpoints and samples"
MODEL_AND_DEVICE = "Model and device"

DATA = Option(
    (), ValueType.PATH, 'A folder of pictures with same-name .txt captions, or a .jsonl of {"path", "caption"} lines.',
    panel=None, metavar="DATA", show_default=False, name="data",
)
OUT = Option(("--out", "-o"), ValueType.PATH, "Output folder: weights, weights.toml, checkpoints/, samples/.", panel=None, show_default=False)
QUIET = Option(("--quiet", "-q"), ValueType.BOOL, "No progress bar or log lines.", panel=None)

# --- what to train ------------------------------------------------------------------------------

MODEL = Option(("--model",), ValueType.STR, "Manifest model to fine-tune; with --preset, the new model's name.", panel=MODEL_AND_DEVICE, optional=True)
PRESET = Option(
    ("--preset",), ValueType.STR, "Train a fresh network of this size instead (micro 16px, tiny 32px, small 64px, full = GLIDE's).",
    panel=MODEL_AND_DEVICE, choices=PRESET_NAMES, optional=True,
)
KIND = Option(
    ("--kind",), ValueType.STR,
    "Kind of a fresh network (--preset; default base). clip: a CLIP of your own; unclip-prior, unclip-decoder: unCLIP's, learning from --clip;"
    " unclip-sr: unCLIP's 4x super-resolution of --decoder's pictures."
    " With a base or upsample --model, base-inpaint or upsample-inpaint starts an inpainting model from it.",
    panel=MODEL_AND_DEVICE, choices=tuple(kind.value for kind in TrainKind), optional=True, show_default=False,
)
CLIP = Option(
    ("--clip",), ValueType.STR, "unclip-prior and unclip-decoder: the CLIP (an openclip entry of --weights) whose embeddings they learn (with --lora, default: the manifest's clip role).",
    panel=MODEL_AND_DEVICE, optional=True, show_default=False,
)
DECODER = Option(
    ("--decoder",), ValueType.STR, "unclip-sr: the unCLIP decoder (an unclip-decoder entry of --weights) whose pictures it enlarges 4x.",
    panel=MODEL_AND_DEVICE, optional=True, show_default=False,
)
NAME = Option(("--name",), ValueType.STR, "Name of the trained model (default: --model).", panel=MODEL_AND_DEVICE, optional=True)
PREDICTION = Option(
    ("--prediction",), ValueType.STR,
    "What the network predicts: eps (GLIDE's models) or v, which learns the prompt's colours far better where the picture is almost"
    " pure noise. Given with --model, the model is converted and learns the new target. [default: the model's own; eps for --preset]",
    panel=MODEL_AND_DEVICE, choices=PREDICTIONS, optional=True, show_default=False,
)
NO_POOLED_TEXT = Option(
    ("--no-pooled-text",), ValueType.BOOL,
    "GLIDE's U-Nets: no pooled text embedding (the projection of the text transformer's last position that GLIDE adds to the timestep"
    " embedding); the prompt reaches the U-Net only through the token sequence its attention reads, as in Stable Diffusion. With"
    " --model, the model's projection is dropped and it learns without it.",
    panel=MODEL_AND_DEVICE,
)
TEXT_LAYERS = Option(
    ("--text-layers",), ValueType.INT,
    "GLIDE's U-Nets, a fresh network (--preset): layers of its text transformer. 0: none, so each position of the sequence the"
    " U-Net reads holds its own word alone (what emphasis, `(word:1.5)`, weighs; docs/prompts.md). [default: the preset's]",
    panel=MODEL_AND_DEVICE, minimum=0, optional=True, show_default=False,
)
CAUSAL_TEXT = Option(
    ("--causal-text",), ValueType.BOOL,
    "GLIDE's U-Nets: each position of the text transformer attends only to itself and those before it, as CLIP's text encoder"
    " does (GLIDE's attends both ways). With --model, the model learns with the mask.",
    panel=MODEL_AND_DEVICE,
)
HIDE_TEXT_PADDING = Option(
    ("--hide-text-padding",), ValueType.BOOL,
    "GLIDE's U-Nets: the U-Net's attention reads the prompt's positions only, not the padding after it (GLIDE's reads all of"
    " them). With --model, the model learns with them hidden.",
    panel=MODEL_AND_DEVICE,
)
TOKENIZER_VOCAB = Option(
    ("--tokenizer-vocab",), ValueType.INT, "Vocabulary of the tokenizer a fresh network gets, built from the captions.", panel=MODEL_AND_DEVICE, minimum=260,
)

# --- LoRA: train an adapter of --model instead of the model itself -------------------------------

LORA = "LoRA adapter (instead of the whole model)"
LORA_RANK = Option(
    ("--lora",), ValueType.INT, "Train a LoRA adapter of this rank for --model (its weights frozen; GLIDE's U-Nets, unCLIP's prior and decoder) instead of fine-tuning the whole model; written in PEFT's format.",
    panel=LORA, minimum=1, optional=True, show_default=False, metavar="RANK",
)
LORA_ALPHA = Option(("--lora-alpha",), ValueType.FLOAT, "The adapter's alpha: its update is scaled by alpha / rank.  [default: the rank]", panel=LORA, minimum=0.0, optional=True, show_default=False)
LORA_DROPOUT = Option(("--lora-dropout",), ValueType.FLOAT, "Dropout on the adapter's input while training.  [default: 0]", panel=LORA, minimum=0.0, maximum=0.9, optional=True, show_default=False)
LORA_TARGETS = Option(
    ("--lora-targets",), ValueType.STR,
    "Layers to adapt, by name, comma-separated: attention (the U-Net's and the text transformers' projections, the prior's), convs (the ResBlocks' convolutions), or layer names such as qkv, proj_out.",
    panel=LORA, show_default=True,
)

# --- the optimization (None: the kind's default, as each help says) -----------------------------


def _training(flag: str, value_type: ValueType, text: str, minimum: float, maximum: float | None = None) -> Option:
    return Option((flag,), value_type, text, panel=TRAINING, minimum=minimum, maximum=maximum, optional=True, show_default=False)


STEPS = Option(("--steps",), ValueType.INT, "Train up to this step (total, counting resumed steps).", panel=TRAINING, minimum=1)
BATCH_SIZE = _training("--batch-size", ValueType.INT, "Pictures per step.  [default: 8]", 1)
LR = _training("--lr", ValueType.FLOAT, "AdamW learning rate.  [default: 1e-4]", 0.0)
WEIGHT_DECAY = _training("--weight-decay", ValueType.FLOAT, "AdamW weight decay.  [default: 0]", 0.0)
EMA = _training("--ema", ValueType.FLOAT, "Decay of the weights' moving average (what is exported).  [default: 0.9999]", 0.0, 0.999999)
WARMUP = _training("--warmup", ValueType.INT, "Steps of linear learning-rate warm-up.  [default: 0]", 0)
GRAD_CLIP = _training("--grad-clip", ValueType.FLOAT, "Clip the gradient norm (0 = off).  [default: 1]", 0.0)
CAPTION_DROPOUT = _training(
    "--caption-dropout", ValueType.FLOAT, "Share of examples trained without caption (for classifier-free guidance).  [default: 0.2]", 0.0, 1.0
)
CROP_MIN = _training("--crop-min", ValueType.FLOAT, "Random crops keep this much of the short side, or more.  [default: 0.8]", 0.05, 1.0)
MIN_SNR = _training(
    "--min-snr", ValueType.FLOAT,
    "Weight the eps loss by min(SNR, GAMMA)/SNR (Min-SNR-gamma): noisy steps, which decide layout and colour, count relatively more."
    " 0 = GLIDE's plain loss.  [default: 0]",
    0.0,
)
NOISY_SHARE = _training(
    "--noisy-share", ValueType.FLOAT,
    "Share of examples whose timestep is drawn from the noisiest 15% (t >= 850 of 1000), where the prompt alone decides colour and layout;"
    " the rest stay uniform. 0 = GLIDE's uniform timesteps.  [default: 0]",
    0.0, 1.0,
)
SEED = _training("--seed", ValueType.INT, "Seeds the data order, crops, noise and a fresh network.  [default: 0]", 0)

# --- checkpoints and samples ----------------------------------------------------------------------

SAVE_EVERY = Option(("--save-every",), ValueType.INT, "Checkpoint every N steps (0: only at the end).", panel=SCHEDULE, minimum=0)
KEEP = Option(("--keep",), ValueType.INT, "Checkpoints to keep.", panel=SCHEDULE, minimum=1)
SAMPLE_EVERY = Option(("--sample-every",), ValueType.INT, "Sample pictures every N steps into samples/ (0: only at the end).", panel=SCHEDULE, minimum=0)
NO_SAMPLES = Option(("--no-samples",), ValueType.BOOL, "Write no sample pictures.", panel=SCHEDULE)
LOG_EVERY = Option(
    ("--log-every",), ValueType.INT, "Write the loss to log.jsonl (and, without a terminal, stderr) every N steps.", panel=SCHEDULE, minimum=1
)
RESUME = Option(("--resume",), ValueType.BOOL, "Continue the run in --out from its last checkpoint, exactly.", panel=SCHEDULE)
SAVE_DTYPE = Option(
    ("--save-dtype",), ValueType.STR, "Precision of the exported weights.  [default: fp32; on --resume, the run's]",
    panel=SCHEDULE, choices=SAVE_DTYPE_NAMES, optional=True, show_default=False,
)

# --- the machine and the weights ---------------------------------------------------------------------

DEVICE = Option(("--device",), ValueType.STR, "auto: $GLIDE_DEVICE when set, else CUDA, then MPS, then CPU.", panel=MODEL_AND_DEVICE, choices=DEVICES)
DTYPE = Option(
    ("--dtype",), ValueType.STR, "Mixed precision (autocast); auto: bf16 (or fp16) on CUDA, fp32 elsewhere.", panel=MODEL_AND_DEVICE, choices=AMP_NAMES
)
GRAD_CHECKPOINTING = Option(
    ("--grad-checkpointing",), ValueType.BOOL, "Recompute activations in the backward pass: less memory, more time.", panel=MODEL_AND_DEVICE
)
WEIGHTS = Option(
    ("--weights",), ValueType.PATH, "Weights manifest (TOML) holding --model; default: the packaged one.",
    panel=MODEL_AND_DEVICE, optional=True, show_default=False, envvar="GLIDE_WEIGHTS",
)
OFFLINE = Option(("--offline",), ValueType.BOOL, "Never download; use cached or local weights only.", panel=MODEL_AND_DEVICE)

# The order of `glide train --help`: its panels, and the options in each.
HELP_ORDER = (
    DATA, OUT, MODEL, PRESET, KIND, CLIP, DECODER, NAME, PREDICTION, NO_POOLED_TEXT, TEXT_LAYERS, CAUSAL_TEXT, HIDE_TEXT_PADDING, TOKENIZER_VOCAB, LORA_RANK, LORA_ALPHA, LORA_DROPOUT, LORA_TARGETS,
    STEPS, BATCH_SIZE, LR, WEIGHT_DECAY, EMA, WARMUP, GRAD_CLIP, CAPTION_DROPOUT, CROP_MIN, MIN_SNR, NOISY_SHARE, SEED,
    SAVE_EVERY, KEEP, SAMPLE_EVERY, NO_SAMPLES, LOG_EVERY, RESUME, SAVE_DTYPE,
    DEVICE, DTYPE, GRAD_CHECKPOINTING, WEIGHTS, OFFLINE, QUIET,
)

# --- `glide dataset shapes` ---------------------------------------------------------------------------

SHAPES_SPREAD = Option(
    ("--spread",), ValueType.FLOAT,
    "How far from the centre a shape may sit, in each axis, as a share of the side (0: always centred). The default keeps every"
    " shape near the middle, as the models of models/ were trained; a wider spread gives pictures whose layout the CLIP embedding"
    " does not fix.",
    panel=None, minimum=0.0, maximum=MAX_SHAPE_SPREAD,
)
