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

This module holds the Trainer with its loop; settings.py holds the run's settings and the
size presets, start.py what a run starts from (a checkpoint to resume, or a fresh folder
and a manifest entry or preset, and the starting network), data.py makes the batches, and
state.py prepares the networks and writes the checkpoints, samples and manifest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import __version__
from ..files.manifest import Manifest
from ..nets.checkpoint import check_state_dict, read_safetensors, save_network
from ..render.shard import Ranks, peer_failure
from .clip_recipe import ClipRecipe
from .data import derived_generator
from .dataset import default_mode, make_folder, scan_dataset
from .lora_recipe import LoraRecipe
from .parallel import any_rank, batch_part, data_parallel, global_means, main_first, mean_loss
from .recipe import GlideRecipe
from .settings import Hyper, ModelSource, RunPlan, ema_decay, learning_rate
from .start import TrainingError, check_fresh_folder, fine_tuned_entry, read_state, resumed_settings
from .state import (
    STATE_VERSION,
    arch_dict,
    checkpoint_dirs,
    load_optimizer_tensors,
    optimizer_tensors,
    prune_checkpoints,
    trim_log,
    write_checkpoint,
)
from .unclip_recipes import DecoderRecipe, PriorRecipe
from .vocabulary import MixedPrecision, SaveDtypeName, TrainKind

AMP_DTYPES: dict[MixedPrecision, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
SAVE_DTYPES: dict[SaveDtypeName, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def recipe_for(kind: str, lora: dict[str, Any] | None = None) -> Any:  # Any: the recipes share methods by name, each typed for its own network
    """What trains models of `kind` (recipe.py): GLIDE's U-Nets, a CLIP, unCLIP's prior or
    decoder; with `lora` (ModelSource.lora) it trains a LoRA adapter of the model (lora_recipe.py)."""
    recipes: dict[str, type[GlideRecipe | ClipRecipe | PriorRecipe | DecoderRecipe]] = {
        TrainKind.CLIP: ClipRecipe, TrainKind.UNCLIP_PRIOR: PriorRecipe, TrainKind.UNCLIP_DECODER: DecoderRecipe
    }
    recipe = recipes.get(kind, GlideRecipe)()
    return LoraRecipe(recipe, lora) if lora else recipe


class TrainingStopped(Exception):
    """The run was asked to stop (Ctrl-C); a checkpoint of `step` was saved first."""

    def __init__(self, step: int, checkpoint: Path):
        super().__init__(f"stopped at step {step}; checkpoint saved in {checkpoint} (continue with --resume)")
        self.step = step
        self.checkpoint = checkpoint


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
        manifest: Manifest | None = None,
        resume: bool = False,
        device: str | torch.device = "cpu",
        offline: bool | None = None,
        progress: Progress | None = None,
        command_line: str = "",
        hyper_given: set[str] | None = None,
        ranks: Ranks | None = None,
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
        state, self.hyper, self.source = self._starting_state(resume, hyper, source, hyper_given)
        if self.ranks.world > self.hyper.batch_size:
            raise TrainingError(
                f"batch size {self.hyper.batch_size} is smaller than the {self.ranks.world} processes; give each at least one example"
            )
        self.save_dtype: SaveDtypeName = plan.save_dtype or (state or {}).get("save_dtype") or "fp32"  # as RunPlan.save_dtype says
        self.plan = dataclasses.replace(plan, save_dtype=self.save_dtype)
        self.recipe = recipe_for(self.source.kind, self.source.lora)
        self.recipe.check(self)
        entry = fine_tuned_entry(self.source, manifest) if state is None else None
        self.dataset = scan_dataset(data, max_side=2 * self.recipe.image_size(self, state, entry))
        if state is not None and state["data"]["fingerprint"] != self.dataset.fingerprint():
            raise TrainingError(
                f"the data set differs from the one this run started with ({state['data']['examples']} examples then,"
                f" {len(self.dataset)} now); an exact resume needs the same files and captions"
            )
        self._set_up_model(manifest, entry, state, offline)
        self._set_up_optimizer(state)
        if plan.grad_checkpointing:
            self.recipe.checkpointing(self.model)
        main_first(self.ranks, before=False)
        self.part = batch_part(self.hyper.batch_size, self.ranks)
        self.net = data_parallel(self.recipe.forward_module(self.model), self.ranks, self.device)

    # -- setup steps

    def _starting_state(
        self, resume: bool, hyper: Hyper, source: ModelSource, hyper_given: set[str] | None
    ) -> tuple[dict[str, Any] | None, Hyper, ModelSource]:
        """On --resume, the last checkpoint's state and the run's settings from it; else no
        state and the settings given, in a folder that holds nothing the run would replace."""
        existing = checkpoint_dirs(self.out)
        if not resume:
            check_fresh_folder(self.out, existing, source.name)
            return None, hyper, source
        if not existing:
            raise TrainingError(f"nothing to resume: no checkpoint in {self.out / 'checkpoints'}")
        self.checkpoint_step, self.checkpoint_path = existing[-1]
        state = read_state(self.checkpoint_path)
        hyper, source = resumed_settings(state, hyper, hyper_given, self.checkpoint_path, self.progress.message)
        return state, hyper, source

    def _set_up_model(self, manifest, entry, state, offline) -> None:
        """The recipe's network config and batches (its tokenizer too); then the network and
        its EMA, from the checkpoint on --resume."""
        created = not self.out.exists()
        make_folder(self.out)
        try:
            self.cfg, model = self.recipe.prepare(self, manifest, entry, state, offline)
        except BaseException:
            if created:  # a run refused at the start leaves no empty folder behind
                with contextlib.suppress(OSError):
                    self.out.rmdir()
            raise

        if state is not None:
            weights = self._read_checkpoint_file("model.safetensors", model)
            ema_weights = self._read_checkpoint_file("ema.safetensors", model)
        else:
            weights = model.state_dict()
            ema_weights = weights
        kind = self.source.kind
        self.model = self.recipe.network(kind, self.cfg, weights, self.device).train().requires_grad_(True)
        self.ema = self.recipe.network(kind, self.cfg, ema_weights, self.device).eval().requires_grad_(False)

    def _set_up_optimizer(self, state: dict[str, Any] | None) -> None:
        """AdamW and the fp16 gradient scaler, with their state and the step on --resume."""
        hyper = self.hyper
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

    def _read_checkpoint_file(self, name: str, model: nn.Module) -> dict[str, Tensor]:
        path = self.checkpoint_path / name
        tensors = read_safetensors(path)
        check_state_dict(model, tensors, str(path))
        return tensors

    # -- one step

    def train_step(self, step: int) -> dict[str, float]:
        device = self.device
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.hyper, step)
        amp_dtype = AMP_DTYPES[self.hyper.amp]
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
            # Dropout layers draw from the global generators: seed them from (seed, step) too.
            stream = f"dropout-rank-{self.ranks.rank}" if self.ranks.rank else "dropout"
            torch.manual_seed(int(derived_generator(self.hyper.seed, stream, step).initial_seed()))
            autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
            terms = self.recipe.loss(self, step, autocast)  # autocast: around the network's call alone
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
            means = {"loss": float(loss.detach()), **{k: float(v.detach().mean()) for k, v in terms.logged.items()}}
        else:
            sums = {"loss": terms.loss.sum(), **{k: v.sum() for k, v in terms.logged.items()}}
            means = global_means(sums, self.hyper.batch_size, self.ranks)
        if not math.isfinite(means["loss"]):
            raise TrainingError(f"the loss became {means['loss']} at step {step + 1}; try a lower --lr or --dtype fp32")
        return means

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
        dtype = SAVE_DTYPES[self.save_dtype]
        exported = self.recipe.network(self.source.kind, self.cfg, self.ema.state_dict(), torch.device("cpu")).to(dtype)
        weights = save_network(exported, self.out / f"{name}.safetensors", metadata={"glidecli.step": str(self.step)})
        os.chmod(weights, default_mode())  # save_network writes through a private temporary file
        manifest = self.recipe.export(self, weights, self._comment())
        return getattr(self.recipe, "adapter_folder", None) or weights, manifest  # a LoRA run's result is its adapter folder

    def _comment(self) -> list[str]:
        lines = [f"Written by glide train (glidecli {__version__}) after {self.step} steps on {len(self.dataset)} examples."]
        if self.command_line:
            lines.append(f"Training command: {self.command_line}")
        return lines

    def write_samples(self, count: int = 4) -> Path:
        """What the EMA model makes of the first captions of the data set (the recipe's samples)."""
        return self.recipe.samples(self, self.out / "samples" / f"step-{self.step}.png", count)

    # -- the loop

    def run(self, should_stop: Callable[[int], bool] | None = None) -> TrainResult:
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
            smoothed: float | None = None
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


__all__ = ["Hyper", "ModelSource", "RunPlan", "Trainer", "TrainingError", "TrainingStopped", "TrainResult"]
