"""Training and fine-tuning GLIDE's U-Nets (`glide train`).

A run trains one model (a manifest entry to fine-tune, or a fresh network of a size preset)
on a captioned data set (see dataset.py) with GLIDE's recipe: random square crops resized
to the model's resolution (and, for upsamplers, the bicubic 4x-smaller version of the crop,
rounded to 8 bits like the base model's output, as the low-resolution input), the caption
dropped for 20% of examples (all padding, as the sampler's unconditional half) so that
classifier-free guidance works, uniform timesteps, and the hybrid loss (losses.py). AdamW
with a linear warm-up, an exponential moving average (EMA) of the weights, optional mixed
precision (autocast) and gradient checkpointing.

Reproducibility: everything random in step k (which examples, crops, caption dropout,
timesteps, noise, dropout layers) comes from generators seeded by (seed, k) alone, and the
data order from (seed, epoch). A checkpoint therefore needs only the weights, the EMA, the
optimizer's moments and the step: resuming from it continues exactly as if the run had
never stopped (bit for bit on the same machine).

Layout of the output folder:

    DIR/NAME.safetensors            the EMA weights (what to sample with)
    DIR/NAME.tokenizer.json         the prompt tokenizer
    DIR/weights.toml                a manifest: glide generate --weights DIR/weights.toml --model NAME
    DIR/checkpoints/step-N/         model, EMA and optimizer (safetensors) + state.json
    DIR/samples/step-N.png          samples of the EMA model at --sample-every
    DIR/log.jsonl                   the loss every few steps
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from . import __version__
from .checkpoint import build_network, check_state_dict, load_network, read_safetensors, save_network
from .config import UNetConfig, unet_defaults
from .dataset import Dataset, build_caption_tokenizer, default_mode, scan_dataset
from .losses import hybrid_loss, q_sample
from .manifest import Manifest, toml_value
from .schedule import Schedule
from .tokenizer import GlideTokenizer
from .unet import Text2ImUNet

TRAINABLE_KINDS = ("base", "upsample")
STATE_VERSION = 1
AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
SAVE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# Fresh networks by size. Upsamplers see 4x-smaller pictures as their low-resolution input.
_TEXT_SMALL = dict(text_ctx=16, xf_width=64, xf_layers=2, xf_heads=4)
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "base": {
        "micro": dict(image_size=16, model_channels=32, num_res_blocks=1, channel_mult=(1, 2), attention_resolutions=(8,),
                      num_head_channels=32, dropout=0.0, text_ctx=8, xf_width=32, xf_layers=1, xf_heads=2),
        "tiny": dict(image_size=32, model_channels=32, num_res_blocks=1, channel_mult=(1, 1, 2, 2), attention_resolutions=(8, 4),
                     num_head_channels=32, dropout=0.0, **_TEXT_SMALL),
        "small": dict(image_size=64, model_channels=64, num_res_blocks=2, channel_mult=(1, 2, 3, 4), attention_resolutions=(16, 8),
                      num_head_channels=32, dropout=0.1, text_ctx=32, xf_width=256, xf_layers=4, xf_heads=4),
        "full": {},  # the official GLIDE base network (64x64)
    },
    "upsample": {
        "micro": dict(image_size=32, model_channels=32, num_res_blocks=1, channel_mult=(1, 1, 2), attention_resolutions=(),
                      num_head_channels=32, dropout=0.0, text_ctx=8, xf_width=32, xf_layers=1, xf_heads=2),
        "tiny": dict(image_size=64, model_channels=32, num_res_blocks=1, channel_mult=(1, 1, 2, 2), attention_resolutions=(8,),
                     num_head_channels=32, dropout=0.0, **_TEXT_SMALL),
        "small": dict(image_size=128, model_channels=64, num_res_blocks=2, channel_mult=(1, 1, 2, 3, 4), attention_resolutions=(16, 8),
                      num_head_channels=32, dropout=0.1, text_ctx=32, xf_width=256, xf_layers=4, xf_heads=4),
        "full": {},  # the official GLIDE upsampler network (64 -> 256)
    },
}


class TrainingError(Exception):
    """A training run that cannot start or continue; the message is one line."""


class TrainingStopped(Exception):
    """The run was asked to stop (Ctrl-C); a checkpoint of `step` was saved first."""

    def __init__(self, step: int, checkpoint: Path):
        super().__init__(f"stopped at step {step}; checkpoint saved in {checkpoint} (continue with --resume)")
        self.step = step
        self.checkpoint = checkpoint


# --- what to train and how ------------------------------------------------------------------


@dataclass(frozen=True)
class Hyper:
    """Settings that shape the optimization; a resumed run must keep them."""

    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.0
    ema: float = 0.9999
    seed: int = 0
    warmup: int = 0
    grad_clip: float = 1.0
    caption_dropout: float = 0.2
    crop_min: float = 0.8  # random crops keep 80..100% of the picture's short side
    amp: str = "fp32"  # autocast dtype: fp32 (off), bf16 or fp16
    min_snr: float = 0.0  # Min-SNR-gamma weighting of the MSE (losses.py); 0: GLIDE's plain loss

    def check(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch size must be at least 1")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight decay must not be negative, got {self.weight_decay}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {self.ema}")
        if not 0 <= self.caption_dropout <= 1:
            raise ValueError(f"caption dropout must be in [0, 1], got {self.caption_dropout}")
        if not 0 < self.crop_min <= 1:
            raise ValueError(f"crop minimum must be in (0, 1], got {self.crop_min}")
        if self.warmup < 0 or self.grad_clip < 0:
            raise ValueError("warm-up and gradient clipping must not be negative")
        if self.min_snr < 0:
            raise ValueError(f"min-SNR gamma must not be negative, got {self.min_snr}")
        if self.amp not in AMP_DTYPES:
            raise ValueError(f"unknown mixed-precision dtype {self.amp!r}; choose fp32, bf16 or fp16")


@dataclass(frozen=True)
class RunPlan:
    """Settings that may change between a run and its resumption."""

    steps: int = 1000
    save_every: int = 500
    sample_every: int = 0  # 0: only at the end
    samples: bool = True  # False: no samples at all
    keep_checkpoints: int = 2
    log_every: int = 50
    grad_checkpointing: bool = False
    save_dtype: str = "fp32"


@dataclass
class ModelSource:
    """Where the starting network comes from: a manifest entry (fine-tuning) or a preset."""

    name: str  # the trained model's name (its file name and manifest entry)
    kind: str = "base"
    entry: Optional[str] = None  # manifest entry to fine-tune
    preset: Optional[str] = None  # size preset of a fresh network
    arch_changes: dict[str, Any] = field(default_factory=dict)  # over the preset's settings
    tokenizer_vocab: int = 512  # vocabulary of a fresh tokenizer built from the captions


def preset_config(kind: str, preset: str, **changes: Any) -> UNetConfig:
    if kind not in PRESETS:
        raise ValueError(f"cannot train {kind!r} models; choose one of {', '.join(TRAINABLE_KINDS)}")
    if preset not in PRESETS[kind]:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS[kind])}")
    return dataclasses.replace(unet_defaults(kind), **{**PRESETS[kind][preset], **changes})


# --- randomness ---------------------------------------------------------------------------


def derived_generator(seed: int, stream: str, index: int) -> torch.Generator:
    """A CPU generator for one (seed, stream, index), independent of every other."""
    digest = hashlib.sha256(f"glidecli-train:{seed}:{stream}:{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


class DataOrder:
    """Example k of the run (k = step * batch + j) in a fresh permutation per epoch."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed
        self._cache: dict[int, Tensor] = {}

    def __getitem__(self, k: int) -> int:
        epoch, position = divmod(k, self.size)
        if epoch not in self._cache:
            self._cache = {epoch: torch.randperm(self.size, generator=derived_generator(self.seed, "epoch", epoch))}
        return int(self._cache[epoch][position])


def _pil_to_tensor(image: Image.Image) -> Tensor:
    array = np.asarray(image, dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).float() / 127.5 - 1.0


def random_crop(image: Image.Image, size: int, crop_min: float, u: Tensor) -> Image.Image:
    """A square crop whose side is crop_min..1 of the short side, at a random place, resized
    to size x size (bicubic); `u` holds the three uniform draws that decide it."""
    width, height = image.size
    short = min(width, height)
    side = max(1, min(short, round(short * (crop_min + (1.0 - crop_min) * float(u[0])))))
    left = min(width - side, int(float(u[1]) * (width - side + 1)))
    top = min(height - side, int(float(u[2]) * (height - side + 1)))
    crop = image.crop((left, top, left + side, top + side))
    return crop if crop.size == (size, size) else crop.resize((size, size), Image.Resampling.BICUBIC)


@dataclass
class Batch:
    x0: Tensor  # [B, 3, S, S] in [-1, 1]
    tokens: Tensor  # [B, ctx]
    mask: Tensor  # [B, ctx]
    t: Tensor  # [B]
    noise: Tensor  # [B, 3, S, S]
    low_res: Optional[Tensor]  # [B, 3, S/4, S/4] for upsamplers
    indices: list[int]
    dropped: Tensor  # [B] bool


class BatchMaker:
    """Builds the batch of any step from the data set and (seed, step) alone."""

    def __init__(self, dataset: Dataset, tokenizer: GlideTokenizer, cfg: UNetConfig, hyper: Hyper):
        self.dataset, self.cfg, self.hyper = dataset, cfg, hyper
        self.order = DataOrder(len(dataset), hyper.seed)
        captions = [example.caption for example in dataset.examples]
        encoded = tokenizer.batch(captions)
        self.tokens, self.mask = encoded.tokens, encoded.mask
        self.truncated = sum(encoded.truncated)
        empty = tokenizer.batch([""])
        self.empty_tokens, self.empty_mask = empty.tokens[0], empty.mask[0]

    def __call__(self, step: int) -> Batch:
        cfg, hyper = self.cfg, self.hyper
        size, batch = cfg.image_size, hyper.batch_size
        generator = derived_generator(hyper.seed, "step", step)
        indices = [self.order[step * batch + j] for j in range(batch)]
        crops = torch.rand(batch, 3, generator=generator)
        dropped = torch.rand(batch, generator=generator) < hyper.caption_dropout
        t = torch.randint(0, cfg.diffusion_steps, (batch,), generator=generator)
        noise = torch.randn(batch, cfg.image_channels, size, size, generator=generator)
        images, lows = [], []
        for j, index in enumerate(indices):
            picture = random_crop(self.dataset.image(index), size, hyper.crop_min, crops[j])
            images.append(_pil_to_tensor(picture))
            if cfg.super_res:
                low = max(1, size // 4)
                lows.append(_pil_to_tensor(picture.resize((low, low), Image.Resampling.BICUBIC)))
        tokens = self.tokens[indices].clone()
        mask = self.mask[indices].clone()
        tokens[dropped] = self.empty_tokens
        mask[dropped] = self.empty_mask
        return Batch(
            x0=torch.stack(images),
            tokens=tokens,
            mask=mask,
            t=t,
            noise=noise,
            low_res=torch.stack(lows) if lows else None,
            indices=indices,
            dropped=dropped,
        )


# --- model preparation ---------------------------------------------------------------------


def init_fresh_(model: Text2ImUNet, seed: int) -> Text2ImUNet:
    """Initialize a new network as ADM does: PyTorch's default layer init, small random text
    embeddings, and zero for the last layer of every residual branch and of the output (so
    each block starts as the identity). Deterministic for a seed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                bound = 1.0 / math.sqrt(module.weight[0].numel())
                module.weight.copy_((torch.rand(module.weight.shape, generator=generator) * 2 - 1) * bound)
                if module.bias is not None:
                    module.bias.copy_((torch.rand(module.bias.shape, generator=generator) * 2 - 1) * bound)
            elif isinstance(module, nn.Embedding):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 0.02)
            elif isinstance(module, (nn.GroupNorm, nn.LayerNorm)):
                module.weight.fill_(1.0)
                module.bias.fill_(0.0)
        for name in ("positional_embedding", "padding_embedding"):
            param = getattr(model, name, None)
            if param is not None:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.01)
        zero = [model.out[-1]]
        for module in model.modules():
            if hasattr(module, "out_layers"):  # ResBlock
                zero.append(module.out_layers[-1])
            if hasattr(module, "proj_out"):  # AttentionBlock
                zero.append(module.proj_out)
        for module in zero:
            module.weight.zero_()
            if module.bias is not None:
                module.bias.zero_()
    return model


def enable_gradient_checkpointing(model: Text2ImUNet) -> None:
    """Recompute each U-Net stage's activations in the backward pass instead of storing
    them (less memory, about a third more compute). Wraps the stages' forward methods."""
    from torch.utils.checkpoint import checkpoint

    stages = [*model.input_blocks, model.middle_block, *model.output_blocks]
    for stage in stages:
        if getattr(stage, "_glide_checkpointed", False):
            continue
        inner = stage.forward

        def forward(*args: Any, _inner: Callable = inner, **kwargs: Any) -> Tensor:
            if torch.is_grad_enabled():
                return checkpoint(_inner, *args, use_reentrant=False, **kwargs)
            return _inner(*args, **kwargs)

        stage.forward = forward
        stage._glide_checkpointed = True


def ema_decay(decay: float, step: int) -> float:
    """The EMA decay at `step`, ramped up early so short runs still average sensibly."""
    return min(decay, (1.0 + step) / (10.0 + step))


def learning_rate(hyper: Hyper, step: int) -> float:
    if hyper.warmup and step < hyper.warmup:
        return hyper.lr * (step + 1) / hyper.warmup
    return hyper.lr


# --- checkpoints -------------------------------------------------------------------------


def checkpoint_dirs(out: Path) -> list[tuple[int, Path]]:
    """The checkpoints in out/checkpoints, oldest first."""
    root = out / "checkpoints"
    found = []
    if root.is_dir():
        for path in root.iterdir():
            if path.is_dir() and path.name.startswith("step-") and path.name[5:].isdigit() and (path / "state.json").is_file():
                found.append((int(path.name[5:]), path))
    return sorted(found)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
    tensors = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            if not isinstance(value, Tensor):
                value = torch.tensor(value)
            tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
    return tensors


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor]) -> None:
    state: dict[int, dict[str, Tensor]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


def _save_tensors(tensors: dict[str, Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def _write_json(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.chmod(tmp, default_mode())
    os.replace(tmp, path)


# --- the run --------------------------------------------------------------------------------


class Progress:
    """Receives what a run reports; the CLI draws a bar from it. Default: silent."""

    def start(self, step: int, total: int) -> None: ...

    def update(self, step: int, loss: float, images_per_second: float) -> None: ...

    def message(self, text: str) -> None: ...

    def stop(self) -> None: ...


@dataclass
class TrainResult:
    step: int
    weights: Path
    manifest: Path
    last_loss: float


class Trainer:
    """One training run in an output folder: set up (fresh or resumed), then `run()`."""

    def __init__(
        self,
        data: Path,
        out: Path,
        source: ModelSource,
        hyper: Hyper,
        plan: RunPlan,
        *,
        manifest: Optional[Manifest] = None,
        resume: bool = False,
        device: str | torch.device = "cpu",
        offline: Optional[bool] = None,
        progress: Optional[Progress] = None,
        command_line: str = "",
        hyper_given: Optional[set[str]] = None,
    ):
        """`hyper_given`: the settings the user gave explicitly; on --resume they must agree
        with the run's (None: all of them are checked)."""
        hyper.check()
        self.out, self.plan, self.progress = Path(out), plan, progress or Progress()
        self.command_line = command_line
        self.device = torch.device(device)
        existing = checkpoint_dirs(self.out)
        state: Optional[dict[str, Any]] = None
        if resume:
            if not existing:
                raise TrainingError(f"nothing to resume: no checkpoint in {self.out / 'checkpoints'}")
            self.checkpoint_step, self.checkpoint_path = existing[-1]
            try:
                state = json.loads((self.checkpoint_path / "state.json").read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                raise TrainingError(f"cannot read {self.checkpoint_path / 'state.json'}: {error}") from None
            if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
                raise TrainingError(f"{self.checkpoint_path} was not written by this version of glide train")
            hyper = _resumed_hyper(hyper, Hyper(**state["hyper"]), hyper_given)
            source = ModelSource(**state["source"])
        elif existing:
            raise TrainingError(
                f"{self.out} already holds a training run (checkpoint step {existing[-1][0]});"
                " use --resume to continue it or choose another --out"
            )
        self.hyper, self.source = hyper, source
        if source.kind not in TRAINABLE_KINDS:
            raise TrainingError(f"training {source.kind} models is not supported; train a base or upsample model")
        if hyper.amp == "fp16" and self.device.type == "cpu":
            raise TrainingError("fp16 mixed precision needs a GPU; use --dtype fp32 or bf16 on the CPU")

        entry = None
        if state is None and source.entry is not None:
            if manifest is None:
                raise TrainingError("fine-tuning a manifest model needs the manifest")
            entry = manifest.model(source.entry)
            if entry.kind != source.kind:
                raise TrainingError(f"model {source.entry!r} is of kind {entry.kind}; glide train trains base and upsample models")
        self.dataset = scan_dataset(data, max_side=2 * _image_size(source, state, entry))
        if state is not None and state["data"]["fingerprint"] != self.dataset.fingerprint():
            raise TrainingError(
                f"the data set differs from the one this run started with ({state['data']['examples']} examples then,"
                f" {len(self.dataset)} now); an exact resume needs the same files and captions"
            )
        self.out.mkdir(parents=True, exist_ok=True)
        self.tokenizer_path = self.out / f"{source.name}.tokenizer.json"
        self.cfg, model = self._prepare_model(manifest, entry, state, offline)
        self.tokenizer = GlideTokenizer.from_file(self.tokenizer_path, text_ctx=self.cfg.text_ctx)
        if self.tokenizer.max_token >= self.cfg.n_vocab:
            raise TrainingError(f"the tokenizer makes ids up to {self.tokenizer.max_token} but the model knows only {self.cfg.n_vocab}")
        self.schedule = Schedule.create(self.cfg.noise_schedule, self.cfg.diffusion_steps)
        self.batches = BatchMaker(self.dataset, self.tokenizer, self.cfg, hyper)

        if state is not None:
            weights = self._read_checkpoint_file("model.safetensors", model)
            ema_weights = self._read_checkpoint_file("ema.safetensors", model)
        else:
            weights = model.state_dict()
            ema_weights = weights
        self.model = _network_from(source.kind, self.cfg, weights, self.device).train().requires_grad_(True)
        self.ema = _network_from(source.kind, self.cfg, ema_weights, self.device).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=hyper.lr, weight_decay=hyper.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=hyper.amp == "fp16")
        self.step = 0
        if state is not None:
            moments = read_safetensors(self.checkpoint_path / "optimizer.safetensors", self.device)
            try:
                _load_optimizer(self.optimizer, moments)
            except (KeyError, ValueError, RuntimeError) as error:
                raise TrainingError(f"{self.checkpoint_path / 'optimizer.safetensors'} does not fit the model: {error}") from None
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            self.step = int(state["step"])
        if plan.grad_checkpointing:
            enable_gradient_checkpointing(self.model)

    # -- setup helpers

    def _prepare_model(self, manifest, entry, state, offline) -> tuple[UNetConfig, Text2ImUNet]:
        source = self.source
        if state is not None:  # the network comes from the checkpoint, the tokenizer from the folder
            cfg = UNetConfig.from_dict({k: tuple(v) if isinstance(v, list) else v for k, v in state["arch"].items()})
            with torch.device("meta"):
                return cfg, build_network(source.kind, cfg)
        if entry is not None:
            from .fetch import fetch_entry

            path = fetch_entry(entry, offline=offline)
            model = load_network(entry.kind, entry.arch, path, "cpu", torch.float32)
            tokenizer_file = fetch_entry(manifest.tokenizer(entry.tokenizer), offline=offline)
            shutil.copyfile(tokenizer_file, self.tokenizer_path)
            return entry.arch, model
        build_caption_tokenizer([e.caption for e in self.dataset.examples], self.tokenizer_path, source.tokenizer_vocab)
        vocab = GlideTokenizer.from_file(self.tokenizer_path).max_token + 1
        try:
            cfg = preset_config(source.kind, source.preset or "tiny", n_vocab=vocab, **source.arch_changes)
        except (TypeError, ValueError) as error:
            raise TrainingError(f"invalid model settings: {' '.join(str(error).split())}") from None
        return cfg, init_fresh_(build_network(source.kind, cfg), self.hyper.seed)

    def _read_checkpoint_file(self, name: str, model: nn.Module) -> dict[str, Tensor]:
        path = self.checkpoint_path / name
        tensors = read_safetensors(path)
        check_state_dict(model, tensors, str(path))
        return tensors

    # -- one step

    def train_step(self, step: int) -> dict[str, float]:
        batch = self.batches(step)
        device = self.device
        x0 = batch.x0.to(device)
        noise = batch.noise.to(device)
        t = batch.t.to(device)
        x_t = q_sample(self.schedule, x0, t, noise)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.hyper, step)
        amp_dtype = AMP_DTYPES[self.hyper.amp]
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
            # Dropout layers draw from the global generators: seed them from (seed, step) too.
            torch.manual_seed(int(derived_generator(self.hyper.seed, "dropout", step).initial_seed()))
            autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
            with autocast:
                text = self.model.encode_text(batch.tokens.to(device), batch.mask.to(device))
                low_res = batch.low_res.to(device) if batch.low_res is not None else None
                output = self.model(x_t, t, text, low_res=low_res)
            terms = hybrid_loss(self.schedule, output, x0, x_t, t, noise, min_snr_gamma=self.hyper.min_snr)
            loss = terms.loss.mean()
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        if self.hyper.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.hyper.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with torch.no_grad():
            decay = ema_decay(self.hyper.ema, step)
            ema_params = list(self.ema.parameters())
            torch._foreach_lerp_(ema_params, [p.detach() for p in self.model.parameters()], 1.0 - decay)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(f"the loss became {value} at step {step + 1}; try a lower --lr or --dtype fp32")
        return {"loss": value, "mse": float(terms.mse.detach().mean()), "vb": float(terms.vb.detach().mean())}

    # -- saving

    def save_checkpoint(self) -> Path:
        root = self.out / "checkpoints"
        root.mkdir(parents=True, exist_ok=True)
        final = root / f"step-{self.step}"
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step-{self.step}."))
        try:
            _save_tensors(self.model.state_dict(), tmp / "model.safetensors")
            _save_tensors(self.ema.state_dict(), tmp / "ema.safetensors")
            _save_tensors(_optimizer_tensors(self.optimizer), tmp / "optimizer.safetensors")
            state = {
                "version": STATE_VERSION,
                "glidecli_version": __version__,
                "step": self.step,
                "hyper": dataclasses.asdict(self.hyper),
                "source": dataclasses.asdict(self.source),
                "arch": _arch_dict(self.cfg),
                "data": {"source": str(self.dataset.source), "examples": len(self.dataset), "fingerprint": self.dataset.fingerprint()},
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            }
            _write_json(tmp / "state.json", state)
            for item in tmp.iterdir():
                os.chmod(item, default_mode())
            os.chmod(tmp, default_mode(directory=True))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for _, old in checkpoint_dirs(self.out)[: -self.plan.keep_checkpoints] if self.plan.keep_checkpoints > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def export(self) -> tuple[Path, Path]:
        """Write the EMA weights and a manifest that names them."""
        name = self.source.name
        dtype = SAVE_DTYPES[self.plan.save_dtype]
        exported = _network_from(self.source.kind, self.cfg, self.ema.state_dict(), torch.device("cpu")).to(dtype)
        weights = save_network(exported, self.out / f"{name}.safetensors", metadata={"glidecli.step": str(self.step)})
        os.chmod(weights, default_mode())  # save_network writes through a private temporary file
        manifest = write_manifest(self.out / "weights.toml", name, self.source.kind, self.cfg, weights, self.tokenizer_path, self._comment())
        return weights, manifest

    def _comment(self) -> list[str]:
        lines = [f"Written by glide train (glidecli {__version__}) after {self.step} steps on {len(self.dataset)} examples."]
        if self.command_line:
            lines.append(f"Training command: {self.command_line}")
        return lines

    @torch.no_grad()
    def write_samples(self, count: int = 4) -> Path:
        """A row of EMA samples (classifier-free guidance 3, 50 DDIM steps) for the first
        captions of the data set; upsamplers get those pictures' low-resolution versions."""
        from .noise import ImageNoise
        from .pipeline import SamplerChoice, encode_prompts, sample_stage

        count = min(count, len(self.dataset))
        captions = [self.dataset.examples[i].caption for i in range(count)]
        low_res = None
        if self.cfg.super_res:
            low = max(1, self.cfg.image_size // 4)
            low_res = torch.stack(
                [_pil_to_tensor(random_crop(self.dataset.image(i), low, 1.0, torch.full((3,), 0.5))) for i in range(count)]
            ).to(self.device)
        conditioning = encode_prompts(self.ema, self.tokenizer, captions, guided=True)
        images = sample_stage(
            self.ema, conditioning, ImageNoise(list(range(count))), SamplerChoice("ddim", "50"), scale=3.0, low_res=low_res
        )
        pixels = ((images.float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        row = torch.cat(list(pixels), dim=2).permute(1, 2, 0).numpy()
        path = self.out / "samples" / f"step-{self.step}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        Image.fromarray(row).save(tmp, format="PNG")
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
        return path

    # -- the loop

    def run(self, should_stop: Optional[Callable[[int], bool]] = None) -> TrainResult:
        """Train to plan.steps. `should_stop(step)` is asked after every step; when it says so
        (or on Ctrl-C, between steps) a checkpoint is saved and TrainingStopped is raised."""
        plan, progress = self.plan, self.progress
        if self.step > plan.steps:
            raise TrainingError(f"the checkpoint is already at step {self.step}, past --steps {plan.steps}")
        log_path = self.out / "log.jsonl"
        _trim_log(log_path, self.step)
        interrupted = threading.Event()
        progress.start(self.step, plan.steps)
        last_loss = float("nan")
        with _stop_on_sigint(interrupted), open(log_path, "a", encoding="utf-8") as log:
            window_start, window_images = time.perf_counter(), 0
            smoothed: Optional[float] = None
            while self.step < plan.steps:
                terms = self.train_step(self.step)
                self.step += 1
                last_loss = terms["loss"]
                smoothed = last_loss if smoothed is None else 0.95 * smoothed + 0.05 * last_loss
                window_images += self.hyper.batch_size
                elapsed = time.perf_counter() - window_start
                rate = window_images / elapsed if elapsed > 0 else 0.0
                if elapsed > 10:
                    window_start, window_images = time.perf_counter(), 0
                progress.update(self.step, smoothed, rate)
                if self.step % max(1, plan.log_every) == 0 or self.step == plan.steps:
                    log.write(json.dumps({"step": self.step, **{k: round(v, 6) for k, v in terms.items()}, "img_per_s": round(rate, 2)}) + "\n")
                    log.flush()
                if plan.save_every and self.step % plan.save_every == 0 and self.step < plan.steps:
                    progress.message(f"checkpoint {self.save_checkpoint()}")
                if plan.samples and plan.sample_every and self.step % plan.sample_every == 0 and self.step < plan.steps:
                    progress.message(f"samples {self.write_samples()}")
                stop = interrupted.is_set() or (should_stop is not None and should_stop(self.step))
                if stop and self.step < plan.steps:
                    path = self.save_checkpoint()
                    progress.stop()
                    raise TrainingStopped(self.step, path)
        progress.stop()
        self.save_checkpoint()
        if plan.samples:
            progress.message(f"samples {self.write_samples()}")
        weights, manifest = self.export()
        return TrainResult(self.step, weights, manifest, last_loss)


def _resumed_hyper(given: Hyper, stored: Hyper, names: Optional[set[str]]) -> Hyper:
    """The run's settings; those given explicitly must agree with them."""
    for item in dataclasses.fields(Hyper):
        if names is not None and item.name not in names:
            continue
        mine, theirs = getattr(given, item.name), getattr(stored, item.name)
        if mine != theirs:
            option = {"amp": "dtype"}.get(item.name, item.name.replace("_", "-"))
            raise TrainingError(
                f"--{option} {mine} differs from the run being resumed ({theirs}); "
                "an exact resume keeps the run's settings (leave the option out)"
            )
    return stored


def _image_size(source: ModelSource, state: Optional[dict], entry) -> int:
    if state is not None:
        return int(state["arch"]["image_size"])
    if entry is not None:
        return entry.arch.image_size
    preset = PRESETS.get(source.kind, {}).get(source.preset or "tiny")
    default = unet_defaults(source.kind if source.kind in TRAINABLE_KINDS else "base").image_size
    return int(source.arch_changes.get("image_size", (preset or {}).get("image_size", default)))


def _network_from(kind: str, cfg: UNetConfig, weights: dict[str, Tensor], device: torch.device) -> Text2ImUNet:
    """A float32 network on `device` holding copies of `weights`."""
    with torch.device("meta"):
        network = build_network(kind, cfg)
    copies = {k: v.detach().to(device=device, dtype=torch.float32, copy=True) for k, v in weights.items()}
    network.load_state_dict(copies, strict=True, assign=True)
    return network


def _trim_log(path: Path, step: int) -> None:
    """Drop log lines past `step` (written by a run that stopped before its next checkpoint)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line)["step"]) <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


@contextlib.contextmanager
def _stop_on_sigint(flag: threading.Event) -> Iterator[None]:
    """The first Ctrl-C asks the loop to stop after the current step; a second one aborts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# --- the manifest of a trained model -------------------------------------------------------


def _arch_dict(cfg: UNetConfig) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def write_manifest(path: Path, name: str, kind: str, cfg: UNetConfig, weights: Path, tokenizer: Path, comment: list[str]) -> Path:
    """A manifest with one model and its tokenizer, paths relative to the manifest."""
    from .fetch import sha256_file

    tokenizer_name = f"{name}-tokenizer"
    lines = [f"# {line}" for line in comment]
    lines += [
        "",
        "version = 1",
        "",
        f"[models.{json.dumps(name)}]",
        f"kind = {toml_value(kind)}",
        f"path = {toml_value(os.path.relpath(weights, path.parent))}",
        f"sha256 = {toml_value(sha256_file(weights))}",
        f"size = {weights.stat().st_size}",
        f"tokenizer = {toml_value(tokenizer_name)}",
        "",
        f"[models.{json.dumps(name)}.arch]",
    ]
    lines += [f"{key} = {toml_value(value)}" for key, value in _arch_dict(cfg).items()]
    lines += [
        "",
        f"[tokenizers.{json.dumps(tokenizer_name)}]",
        f"path = {toml_value(os.path.relpath(tokenizer, path.parent))}",
        f"sha256 = {toml_value(sha256_file(tokenizer))}",
    ]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    os.chmod(tmp, default_mode())
    os.replace(tmp, path)
    return path


__all__ = [
    "Hyper",
    "ModelSource",
    "PRESETS",
    "RunPlan",
    "Trainer",
    "TrainingError",
    "TrainingStopped",
    "TrainResult",
    "preset_config",
]
