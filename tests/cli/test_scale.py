"""More than one process: torchrun's ranks and --shard tasks together write exactly the files
one process writes (byte for byte), a killed rank leaves only whole files and a rerun finishes
the rest; torchrun training equals one process with the same global batch, and a run whose
rank died resumes under torchrun to the uninterrupted result. Runs the small `shapes` model
and micro networks on the CPU with gloo; skips where several processes cannot run."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glidecli.cli import main as cli
from glidecli.train.shapes import write_shapes
from helpers.glide_cli import assert_one_error_line, invoker
from helpers.paths import MODELS
from helpers.torchrun import can_run_ranks, glide_command, glide_env, kill_rank_when, run, torchrun_command

MANIFEST = MODELS / "weights.toml"
PROMPTS = ["a red circle on a blue background", "a green square on a yellow background", "a blue triangle on a red background"]
# 3 prompts x 4 images = 12 jobs; 8 steps keep each picture slow enough to kill a rank mid-run.
RENDER = ["generate", "--weights", MANIFEST, "--model", "shapes", "--size", "32", "--steps", "8", "-n", "4", "--seed", "7",
          "--device", "cpu", "-q"]

needs_ranks = pytest.mark.skipif(can_run_ranks() is not None, reason=str(can_run_ranks()))
needs_proc = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finding a rank's process needs Linux's /proc")
needs_model = pytest.mark.skipif(not MANIFEST.is_file(), reason=f"the small model is absent: {MANIFEST}")


@pytest.fixture
def glide(capsys, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "GLIDE_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    return invoker(capsys, monkeypatch)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


@pytest.fixture(scope="module")
def whole(prompts, tmp_path_factory) -> dict[str, bytes]:
    """What one process writes for the 12 jobs: file name -> bytes."""
    out = tmp_path_factory.mktemp("one")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert cli.run([str(a) for a in [*RENDER, "--prompts-file", prompts, "--out", out]]) == 0
    return files(out)


def files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


# --- rendering --------------------------------------------------------------------------------


@needs_model
def test_shards_of_a_job_array_together_write_the_whole(glide, prompts, whole, tmp_path):
    assert len(whole) == 12
    for k in range(2):
        assert glide(*RENDER, "--prompts-file", prompts, "--out", tmp_path, "--shard", f"{k}/2").code == 0
        if k == 0:  # task 0 wrote the first half of the jobs, contiguous
            assert sorted(files(tmp_path)) == sorted(whole)[:6]
    assert files(tmp_path) == whole


@needs_model
def test_bad_shards_and_idle_tasks(glide, prompts, tmp_path, monkeypatch):
    base = [*RENDER, "--prompts-file", prompts, "--out", tmp_path]
    assert_one_error_line(glide(*base, "--shard", "2/2"), 2, "--shard '2/2'", "0..N-1")
    assert_one_error_line(glide(*base, "--shard", "one/2"), 2, "expected k/N")
    no_seed = [a for a in base if a not in ("--seed", "7")]
    assert_one_error_line(glide(*no_seed, "--shard", "0/2"), 2, "--shard needs --seed")
    # More tasks than images: an idle task says so and succeeds.
    idle = glide("generate", "a red circle", "--weights", MANIFEST, "--model", "shapes", "--size", "32", "--seed", "1",
                 "--out", tmp_path / "idle", "--shard", "3/4")
    assert idle.code == 0 and idle.out == "" and "shard 3/4: no images for this process" in idle.err
    # WORLD_SIZE without the rest of torchrun's variables.
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert_one_error_line(glide(*base), 2, "WORLD_SIZE is 2 but RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT are not set", "torchrun")
    assert not any(tmp_path.glob("*.png"))


@needs_ranks
@needs_model
def test_two_ranks_write_what_one_process_writes(prompts, whole, tmp_path):
    done = run(torchrun_command([*RENDER, "--prompts-file", prompts, "--out", tmp_path, "--json"]))
    assert done.returncode == 0, done.stderr
    assert files(tmp_path) == whole  # same names, same bytes (pixels and metadata)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    records, summary = lines[:-1], lines[-1]
    assert sorted((r["rank"], r["index"]) for r in records) == [(i // 6, i) for i in range(12)]  # contiguous halves
    assert all(r["ranks"] == 2 for r in records)
    assert summary["summary"]["ranks"] == 2 and summary["summary"]["written"] == 12 and summary["summary"]["skipped"] == 0
    assert "Traceback" not in done.stderr


@needs_ranks
@needs_model
def test_ranks_that_offload_write_what_one_process_writes(prompts, whole, tmp_path):
    """Each rank's session offloads its own networks (render/offload.py): the same files."""
    done = run(torchrun_command([*RENDER, "--prompts-file", prompts, "--out", tmp_path, "--offload", "model"]))
    assert done.returncode == 0, done.stderr
    assert files(tmp_path) == whole


@needs_ranks
@needs_model
@needs_proc
def test_a_killed_rank_leaves_whole_files_and_a_rerun_finishes(prompts, whole, tmp_path):
    second_half = set(sorted(whole)[6:])

    def rank_1_wrote() -> bool:
        return bool(second_half & {p.name for p in tmp_path.glob("*.png")})

    assert kill_rank_when([*RENDER, "--prompts-file", prompts, "--out", tmp_path, "--skip-existing"], rank_1_wrote) != 0
    left = files(tmp_path)
    pictures = {name: data for name, data in left.items() if name.endswith(".png") and not name.startswith(".")}
    assert 0 < len(pictures) < 12  # killed mid-run...
    assert all(whole[name] == data for name, data in pictures.items())  # ...with whole, correct files only
    rerun = run(torchrun_command([*RENDER, "--prompts-file", prompts, "--out", tmp_path, "--skip-existing"]))
    assert rerun.returncode == 0, rerun.stderr
    assert {n: d for n, d in files(tmp_path).items() if not n.startswith(".")} == whole
    assert f"skipping {len([n for n in pictures if n in second_half])} of 6" in rerun.stderr


# --- training -----------------------------------------------------------------------------------

TRAIN = ["train", "--preset", "micro", "--model", "m", "--batch-size", "4", "--lr", "1e-3", "--ema", "0.9", "--steps", "16",
         "--save-every", "4", "--keep", "9", "--log-every", "1", "--no-samples", "--device", "cpu", "--quiet"]


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]


def checkpoint(out: Path, step: int) -> dict[str, dict[str, torch.Tensor]]:
    folder = out / "checkpoints" / f"step-{step}"
    return {name: load_file(folder / f"{name}.safetensors") for name in ("model", "ema", "optimizer")}


@needs_ranks
@needs_proc
def test_torchrun_training_matches_one_process_and_resumes_after_a_dead_rank(tmp_path):
    data = tmp_path / "data"
    list(write_shapes(data, 12, size=20, seed=3))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert cli.run([str(a) for a in [*TRAIN, data, "--out", tmp_path / "one"]]) == 0
    two = run(torchrun_command([*TRAIN, data, "--out", tmp_path / "two"]))
    assert two.returncode == 0, two.stderr
    assert two.stdout.splitlines() == [str(tmp_path / "two" / "m.safetensors"), str(tmp_path / "two" / "weights.toml")]  # rank 0 alone
    # The same global batches: the logged losses agree, and so do the optimizer's moments
    # (averages of the gradients), to float rounding; Adam's normalised steps then keep the
    # weights within a small fraction of what 16 steps of lr 1e-3 move them.
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-5)
    one, both = checkpoint(tmp_path / "one", 16), checkpoint(tmp_path / "two", 16)
    for name, tensor in one["optimizer"].items():
        torch.testing.assert_close(both["optimizer"][name], tensor, atol=1e-6, rtol=1e-4)
    start = checkpoint(tmp_path / "one", 4)["model"]
    moved = max((one["model"][k] - start[k]).abs().max().item() for k in start)
    drift = max((both["model"][k] - one["model"][k]).abs().max().item() for k in start)
    assert drift < 0.1 * moved, (drift, moved)

    # A run whose rank 1 is killed stops (no hang) with whole checkpoints, and resumes under
    # torchrun to exactly the run that never stopped.
    killed = tmp_path / "killed"
    assert kill_rank_when([*TRAIN, data, "--out", killed], lambda: (killed / "checkpoints" / "step-4" / "state.json").is_file()) != 0
    saved = sorted(int(p.name[5:]) for p in (killed / "checkpoints").glob("step-*"))
    assert saved and saved[-1] < 16 and not (killed / "m.safetensors").exists()
    resumed = run(torchrun_command([*TRAIN[:1], data, "--out", killed, "--resume", "--steps", "16", "--quiet", "--device", "cpu"]))
    assert resumed.returncode == 0, resumed.stderr
    after, uninterrupted = checkpoint(killed, 16), checkpoint(tmp_path / "two", 16)
    for part in after:
        for name, tensor in uninterrupted[part].items():
            assert torch.equal(after[part][name], tensor), (part, name)
    assert (killed / "m.safetensors").read_bytes() == (tmp_path / "two" / "m.safetensors").read_bytes()


@needs_ranks
@pytest.mark.parametrize("kind", ["clip", "unclip-prior", "unclip-decoder"])
def test_torchrun_unclip_training_matches_one_process(tmp_path, kind):
    """A CLIP (its contrastive loss gathers every rank's features), unCLIP's prior and decoder
    on two ranks: the global batches of one process (train/clip_recipe.py, unclip_recipes.py)."""
    from glidecli.train.loop import Trainer
    from glidecli.train.settings import Hyper, ModelSource, RunPlan

    data = tmp_path / "data"
    list(write_shapes(data, 12, size=20, seed=3))
    common = ["--preset", "micro", "--model", "m", "--steps", "6", "--batch-size", "5", "--lr", "1e-3", "--no-samples",
              "--log-every", "1", "--device", "cpu", "-q"]
    if kind == "clip":
        command = ["train", data, "--kind", "clip", *common]
    else:
        clip = Trainer(data, tmp_path / "clip", ModelSource(name="c", kind="clip", preset="micro", arch_changes={"text_ctx": 16}),
                       Hyper(batch_size=4), RunPlan(steps=1, save_every=0, samples=False)).run().manifest
        command = ["train", data, "--kind", kind, "--clip", "c", "--weights", clip, *common]
    env = glide_env(GLIDE_CACHE=str(tmp_path / "cache"))
    one = subprocess.run(glide_command([*command, "--out", tmp_path / "one"]), env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run(torchrun_command([*command, "--out", tmp_path / "two"]), env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-5)  # batches of 5: ranks of 3 and 2
    first, second = checkpoint(tmp_path / "one", 6), checkpoint(tmp_path / "two", 6)
    for name, tensor in first["optimizer"].items():
        torch.testing.assert_close(second["optimizer"][name], tensor, atol=1e-6, rtol=1e-4)


@needs_ranks
@pytest.mark.parametrize("model", ["shapes", "shapes-prior"])
def test_torchrun_lora_training_matches_one_process(tmp_path, model):
    """A LoRA adapter of the shapes model, or of the shapes unCLIP's prior (train/lora_recipe.py),
    on two ranks: the global batches of one process; DDP sees the adapter's parameters alone."""
    data = tmp_path / "data"
    list(write_shapes(data, 12, size=20, seed=3))
    command = ["train", data, "--model", model, "--weights", MANIFEST, "--lora", "2", "--steps", "4", "--batch-size", "4", "--lr", "1e-3",
               "--no-samples", "--log-every", "1", "--device", "cpu", "-q"]
    env = glide_env(GLIDE_CACHE=str(tmp_path / "cache"))
    one = subprocess.run(glide_command([*command, "--out", tmp_path / "one"]), env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run(torchrun_command([*command, "--out", tmp_path / "two"]), env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    assert two.stdout.splitlines() == [str(tmp_path / "two" / f"{model}-lora"), str(tmp_path / "two" / "weights.toml")]  # rank 0 alone
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-5)
    first, second = checkpoint(tmp_path / "one", 4), checkpoint(tmp_path / "two", 4)
    assert first["model"].keys() == second["model"].keys()
    for name, tensor in first["optimizer"].items():
        torch.testing.assert_close(second["optimizer"][name], tensor, atol=1e-6, rtol=1e-4)
