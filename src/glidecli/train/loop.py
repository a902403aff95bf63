"""Training and fine-tuning GLIDE's U-Nets (`glide train`).

A run trains one model (a manifest entry to fine-tune, or a fresh network of a size preset)
on a captioned data set (see dataset.py) with GLIDE's recipe: random square crops resized
to the model's resolution (and, for upsamplers, the bicubic 4x-smaller version of the crop,
rounded to 8 bits like the base model's output, as the low-resolution input), the caption
dropped for 20% of examples (all padding, as the sampler's unconditional half) so that
classifier-free guidance works, uniform timesteps, and the hybrid loss (losses.py);
inpainting models also see the picture with a random region erased and its mask. AdamW
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

This module holds the run's settings, the size presets and the Trainer with its loop;
data.py makes the batches (with settings.py holding the run's optimization settings), and state.py prepares the networks and writes
the checkpoints, samples and manifest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from torch import Tensor, nn

from .. import __version__
from ..diffusion.losses import hybrid_loss, q_sample
from ..diffusion.schedule import Schedule
from ..files.manifest import Manifest
from ..nets.checkpoint import (
    build_network,
    check_state_dict,
    load_network,
    read_safetensors,
    save_network,
)
from ..nets.config import UNetConfig, unet_defaults
from ..nets.tokenizer import GlideTokenizer
from ..nets.unet import Text2ImUNet
from ..render.shard import Ranks, peer_failure
from .data import BatchMaker, derived_generator, pil_to_tensor, random_crop
from .dataset import build_caption_tokenizer, default_mode, make_folder, scan_dataset
from .parallel import any_rank, batch_part, data_parallel, global_means, main_first, mean_loss
from .settings import AMP_DTYPES, SAVE_DTYPES, Hyper
from .state import (
    RESUMABLE_VERSIONS,
    STATE_VERSION,
    arch_dict,
    checkpoint_dirs,
    enable_gradient_checkpointing,
    init_fresh_,
    inpainting_weights,
    load_optimizer_tensors,
    network_from_weights,
    optimizer_tensors,
    prune_checkpoints,
    trim_log,
    write_checkpoint,
    write_manifest,
    write_png,
)

TRAINABLE_KINDS = ("base", "upsample", "base-inpaint", "upsample-inpaint")

# Fresh networks by size. Upsamplers see 4x-smaller pictures as their low-resolution input;
# inpainting variants take the sizes of their base or upsample kind.
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
class RunPlan:
    """Settings that may change between a run and its resumption."""

    steps: int = 1000
    save_every: int = 500
    sample_every: int = 0  # 0: only at the end
    samples: bool = True  # False: no samples at all
    keep_checkpoints: int = 2
    log_every: int = 50
    grad_checkpointing: bool = False
    save_dtype: Optional[str] = None  # None: the resumed run's, else fp32


@dataclass
class ModelSource:
    """Where the starting network comes from: a manifest entry (fine-tuning) or a preset."""

    name: str  # the trained model's name (its file name and manifest entry)
    kind: str = "base"
    entry: Optional[str] = None  # manifest entry to fine-tune
    preset: Optional[str] = None  # size preset of a fresh network
    arch_changes: dict[str, Any] = field(default_factory=dict)  # over the preset's (or, only "prediction", the entry's)
    tokenizer_vocab: int = 512  # vocabulary of a fresh tokenizer built from the captions


def preset_config(kind: str, preset: str, **changes: Any) -> UNetConfig:
    if kind not in TRAINABLE_KINDS:
        raise ValueError(f"cannot train {kind!r} models; choose one of {', '.join(TRAINABLE_KINDS)}")
    sizes = PRESETS[kind.removesuffix("-inpaint")]
    if preset not in sizes:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(sizes)}")
    return dataclasses.replace(unet_defaults(kind), **{**sizes[preset], **changes})


# --- the optimization schedule ---------------------------------------------------------------


def ema_decay(decay: float, step: int) -> float:
    """The EMA decay at `step`, ramped up early so short runs still average sensibly."""
    return min(decay, (1.0 + step) / (10.0 + step))


def learning_rate(hyper: Hyper, step: int) -> float:
    if hyper.warmup and step < hyper.warmup:
        return hyper.lr * (step + 1) / hyper.warmup
    return hyper.lr


# --- the run --------------------------------------------------------------------------------


class Progress:
    """Receives what a run reports; the CLI draws a bar from it. Default: silent."""

    def start(self, step: int, total: int) -> None: ...

    def update(self, step: int, loss: float, images_per_second: float) -> None:
        """After each step; `loss` is smoothed (an exponential average, 0.95 per step), the raw
        per-step losses are in log.jsonl and the result's `last_loss`."""

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
        ranks: Optional[Ranks] = None,
    ):
        """`hyper_given`: the settings the user gave explicitly; on --resume they must agree
        with the run's (None: all of them are checked). `ranks`: this process's place in a
        torchrun launch, whose process group must be joined (parallel.py)."""
        hyper.check()
        self.ranks = ranks or Ranks()
        main_first(self.ranks, before=True)  # rank 0 writes the tokenizer; the others read it
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
            hyper, source = self._resumed_settings(state, hyper, hyper_given)
        elif existing:
            raise TrainingError(
                f"{self.out} already holds a training run (checkpoint step {existing[-1][0]});"
                " use --resume to continue it or choose another --out"
            )
        else:  # a fresh run exports over these at the end: never over a manifest or weights of the user's
            taken = [name for name in ("weights.toml", f"{source.name}.safetensors") if os.path.lexists(self.out / name)]
            if taken:
                raise TrainingError(
                    f"{self.out} already holds {' and '.join(taken)}, which this run would replace; choose another --out"
                )
        self.hyper, self.source = hyper, source
        if self.ranks.world > hyper.batch_size:
            raise TrainingError(
                f"batch size {hyper.batch_size} is smaller than the {self.ranks.world} processes; give each at least one example"
            )
        if plan.save_dtype is None:  # a resumed run exports as it was set up to
            self.plan = dataclasses.replace(plan, save_dtype=(state or {}).get("save_dtype") or "fp32")
        if source.kind not in TRAINABLE_KINDS:
            raise TrainingError(f"training {source.kind} models is not supported; train one of {', '.join(TRAINABLE_KINDS)}")
        if hyper.amp == "fp16" and self.device.type == "cpu":
            raise TrainingError("fp16 mixed precision needs a GPU; use --dtype fp32 or bf16 on the CPU")

        entry = None
        if state is None and source.entry is not None:
            if manifest is None:
                raise TrainingError("fine-tuning a manifest model needs the manifest")
            entry = manifest.model(source.entry)
            if set(source.arch_changes) - {"prediction"}:
                raise TrainingError("a fine-tuned model keeps its architecture; only its prediction (eps or v) can change")
            if source.kind not in (entry.kind, f"{entry.kind}-inpaint"):
                raise TrainingError(
                    f"model {source.entry!r} is of kind {entry.kind}; it can be fine-tuned as {entry.kind}"
                    + ("" if entry.kind.endswith("-inpaint") else f" or started as {entry.kind}-inpaint")
                )
        self.dataset = scan_dataset(data, max_side=2 * _image_size(source, state, entry))
        if state is not None and state["data"]["fingerprint"] != self.dataset.fingerprint():
            raise TrainingError(
                f"the data set differs from the one this run started with ({state['data']['examples']} examples then,"
                f" {len(self.dataset)} now); an exact resume needs the same files and captions"
            )
        make_folder(self.out)
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
        self.model = network_from_weights(source.kind, self.cfg, weights, self.device).train().requires_grad_(True)
        self.ema = network_from_weights(source.kind, self.cfg, ema_weights, self.device).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=hyper.lr, weight_decay=hyper.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=hyper.amp == "fp16")
        self.step = 0
        if state is not None:
            moments = read_safetensors(self.checkpoint_path / "optimizer.safetensors", self.device)
            try:
                load_optimizer_tensors(self.optimizer, moments)
            except (KeyError, ValueError, RuntimeError) as error:
                raise TrainingError(f"{self.checkpoint_path / 'optimizer.safetensors'} does not fit the model: {error}") from None
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            self.step = int(state["step"])
        if plan.grad_checkpointing:
            enable_gradient_checkpointing(self.model)
        main_first(self.ranks, before=False)
        self.part = batch_part(hyper.batch_size, self.ranks)
        self.net = data_parallel(self.model, self.ranks, self.device)

    # -- setup helpers

    def _prepare_model(self, manifest, entry, state, offline) -> tuple[UNetConfig, Text2ImUNet]:
        source = self.source
        if state is not None:  # the network comes from the checkpoint, the tokenizer from the folder
            cfg = UNetConfig.from_dict({k: tuple(v) if isinstance(v, list) else v for k, v in state["arch"].items()})
            with torch.device("meta"):
                return cfg, build_network(source.kind, cfg)
        if entry is not None:
            from ..files.fetch import fetch_entry

            path = fetch_entry(entry, offline=offline)
            model = load_network(entry.kind, entry.arch, path, "cpu", torch.float32)
            tokenizer_file = fetch_entry(manifest.tokenizer(entry.tokenizer), offline=offline)
            if self.ranks.is_main:
                shutil.copyfile(tokenizer_file, self.tokenizer_path)
            # arch_changes may only say what the outputs predict; the weights keep their shapes.
            cfg = dataclasses.replace(entry.arch, inpaint=source.kind.endswith("-inpaint"), **source.arch_changes)
            weights = model.state_dict()
            if cfg.inpaint and not entry.arch.inpaint:  # a new inpainting model from a base or upsampler
                weights = inpainting_weights(weights, entry.arch)
            return cfg, network_from_weights(source.kind, cfg, weights, torch.device("cpu"))
        if self.ranks.is_main:
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
        batch = self.batches(step, self.part)
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
            stream = f"dropout-rank-{self.ranks.rank}" if self.ranks.rank else "dropout"
            torch.manual_seed(int(derived_generator(self.hyper.seed, stream, step).initial_seed()))
            autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
            with autocast:
                low_res = batch.low_res.to(device) if batch.low_res is not None else None
                known = {}
                if batch.keep_mask is not None:  # the model multiplies the picture by the mask itself
                    known = dict(inpaint_image=x0, inpaint_mask=batch.keep_mask.to(device))
                output = self.net(x_t, t, batch.tokens.to(device), batch.mask.to(device), low_res, known)
            terms = hybrid_loss(
                self.schedule, output, x0, x_t, t, noise, min_snr_gamma=self.hyper.min_snr, prediction=self.cfg.prediction
            )
            loss = mean_loss(terms.loss, self.hyper.batch_size, self.ranks)
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
        if not self.ranks.launched:
            means = {"loss": float(loss.detach()), "mse": float(terms.mse.detach().mean()), "vb": float(terms.vb.detach().mean())}
        else:
            sums = {"loss": terms.loss.sum(), "mse": terms.mse.sum(), "vb": terms.vb.sum()}
            means = global_means(sums, self.hyper.batch_size, self.ranks)
        if not math.isfinite(means["loss"]):
            raise TrainingError(f"the loss became {means['loss']} at step {step + 1}; try a lower --lr or --dtype fp32")
        return means

    def _resumed_settings(self, state: Any, hyper: Hyper, hyper_given: Optional[set[str]]) -> tuple[Hyper, "ModelSource"]:
        """The run's settings from a checkpoint's state. Version 1 (before torchrun) differs only
        in how examples drew their randomness, so it resumes, with a note that the batches
        from here on are not those the earlier version would have drawn."""
        version = state.get("version") if isinstance(state, dict) else None
        if version not in RESUMABLE_VERSIONS:
            raise TrainingError(f"{self.checkpoint_path} was not written by this version of glide train")
        try:
            saved = Hyper(**state["hyper"])
            saved.check()  # values of the wrong type or range: a hand-edited or damaged file
            source = ModelSource(**state["source"])
            if not isinstance(state["step"], int) or not isinstance(state["data"], dict):
                raise TypeError("step or data")
            if not isinstance(state["data"]["fingerprint"], str) or not isinstance(state["data"]["examples"], int):
                raise TypeError("data")
        except (KeyError, TypeError, ValueError) as error:
            raise TrainingError(f"{self.checkpoint_path / 'state.json'} is incomplete or damaged ({error})") from None
        if version < STATE_VERSION:
            self.progress.message(
                f"note: {self.checkpoint_path} was written by an earlier glide train (state version {version});"
                " it resumes with this version's data draws, so its batches from here on differ from the earlier version's"
            )
        return _resumed_hyper(hyper, saved, hyper_given), source

    # -- saving

    def save_checkpoint(self) -> Path:
        """Rank 0 writes the checkpoint; every rank returns where it is."""
        if not self.ranks.is_main:
            return self.out / "checkpoints" / f"step-{self.step}"
        state = {
            "version": STATE_VERSION,
            "glidecli_version": __version__,
            "step": self.step,
            "hyper": dataclasses.asdict(self.hyper),
            "source": dataclasses.asdict(self.source),
            "arch": arch_dict(self.cfg),
            "data": {"source": str(self.dataset.source), "examples": len(self.dataset), "fingerprint": self.dataset.fingerprint()},
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "save_dtype": self.plan.save_dtype,
        }
        tensors = {"model": self.model.state_dict(), "ema": self.ema.state_dict(), "optimizer": optimizer_tensors(self.optimizer)}
        path = write_checkpoint(self.out, self.step, tensors, state)
        prune_checkpoints(self.out, self.plan.keep_checkpoints)
        return path

    def export(self) -> tuple[Path, Path]:
        """Write the EMA weights and a manifest that names them."""
        name = self.source.name
        if not self.ranks.is_main:  # rank 0 writes them
            return self.out / f"{name}.safetensors", self.out / "weights.toml"
        dtype = SAVE_DTYPES[self.plan.save_dtype]
        exported = network_from_weights(self.source.kind, self.cfg, self.ema.state_dict(), torch.device("cpu")).to(dtype)
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
        captions of the data set; upsamplers get those pictures' low-resolution versions, and
        inpainting models those pictures with the middle half of each side to fill."""
        from ..diffusion.noise import ImageNoise
        from ..render.pipeline import (
            Inpainting,
            SamplerChoice,
            encode_prompts,
            sample_stage,
        )

        count = min(count, len(self.dataset))
        captions = [self.dataset.examples[i].caption for i in range(count)]

        def pictures(size: int) -> Tensor:
            centre = torch.full((3,), 0.5)
            return torch.stack([pil_to_tensor(random_crop(self.dataset.image(i), size, 1.0, centre)) for i in range(count)]).to(self.device)

        size = self.cfg.image_size
        low_res = pictures(max(1, size // 4)) if self.cfg.super_res else None
        inpainting = None
        if self.cfg.inpaint:
            keep = torch.ones(count, 1, size, size, device=self.device)
            keep[:, :, size // 4 : size - size // 4, size // 4 : size - size // 4] = 0.0
            inpainting = Inpainting(pictures(size), keep)
        conditioning = encode_prompts(self.ema, self.tokenizer, captions, guided=True)
        images = sample_stage(
            self.ema, conditioning, ImageNoise(list(range(count))), SamplerChoice("ddim", "50"), scale=3.0,
            low_res=low_res, inpainting=inpainting,
        )
        pixels = ((images.float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        row = torch.cat(list(pixels), dim=2).permute(1, 2, 0).numpy()
        return write_png(self.out / "samples" / f"step-{self.step}.png", row)

    # -- the loop

    def run(self, should_stop: Optional[Callable[[int], bool]] = None) -> TrainResult:
        """Train to plan.steps. `should_stop(step)` is asked after every step; when it says so
        (or on Ctrl-C, between steps) a checkpoint is saved and TrainingStopped is raised."""
        plan, progress = self.plan, self.progress
        if self.step > plan.steps:
            raise TrainingError(f"the checkpoint is already at step {self.step}, past --steps {plan.steps}")
        main = self.ranks.is_main
        log_path = self.out / "log.jsonl" if main else Path(os.devnull)  # rank 0 logs
        if main:
            trim_log(log_path, self.step)
        interrupted = threading.Event()
        progress.start(self.step, plan.steps)
        last_loss = float("nan")
        stop_on_sigint = _stop_on_sigint(interrupted, second_aborts=not self.ranks.launched)
        with stop_on_sigint, open(log_path, "a", encoding="utf-8") as log, self._peers_watched():
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
                if main and plan.samples and plan.sample_every and self.step % plan.sample_every == 0 and self.step < plan.steps:
                    progress.message(f"samples {self.write_samples()}")
                stop = interrupted.is_set() or (should_stop is not None and should_stop(self.step))
                stop = any_rank(stop, self.ranks, self.device)  # every rank stops after the same step
                if stop and self.step < plan.steps:
                    path = self.save_checkpoint()
                    progress.stop()
                    raise TrainingStopped(self.step, path)
        progress.stop()
        self.save_checkpoint()
        if main and plan.samples:
            progress.message(f"samples {self.write_samples()}")
        weights, manifest = self.export()
        return TrainResult(self.step, weights, manifest, last_loss)


    @contextlib.contextmanager
    def _peers_watched(self) -> Iterator[None]:
        """A rank that dies makes the others' collectives fail: one line, not a traceback."""
        try:
            yield
        except Exception as error:  # noqa: BLE001 - only the process group's errors are translated
            if not self.ranks.launched or not peer_failure(error):
                raise
            saved = checkpoint_dirs(self.out)
            last = f"; the last checkpoint is {saved[-1][1]} (continue with --resume)" if saved else ""
            raise TrainingError(f"another process of the run stopped during step {self.step + 1}{last}") from None


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
    preset = PRESETS.get(source.kind.removesuffix("-inpaint"), {}).get(source.preset or "tiny")
    default = unet_defaults(source.kind if source.kind in TRAINABLE_KINDS else "base").image_size
    return int(source.arch_changes.get("image_size", (preset or {}).get("image_size", default)))



@contextlib.contextmanager
def _stop_on_sigint(flag: threading.Event, second_aborts: bool = True) -> Iterator[None]:
    """The first Ctrl-C asks the loop to stop after the current step; a second one aborts,
    except under torchrun, which passes the user's Ctrl-C on to its ranks once more and ends
    them itself after a grace period."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        if flag.is_set() and second_aborts:
            raise KeyboardInterrupt
        flag.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


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
