"""Running `glide` on several local processes with torchrun (gloo on the CPU), for the tests
of split rendering and data-parallel training."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .paths import REPO_ROOT

SRC = REPO_ROOT / "src"


def can_run_ranks() -> str | None:
    """Why several gloo processes cannot run here (None: they can)."""
    try:
        import torch.distributed as dist
    except ImportError:
        return "torch.distributed is missing"
    if not dist.is_available() or not dist.is_gloo_available():
        return "torch.distributed has no gloo backend"
    if sys.platform == "win32":
        return "torchrun's local launch is tested on POSIX only"
    return None


def glide_env(**extra: str) -> dict[str, str]:
    """This checkout's glidecli first, one thread per process, no torchrun variables inherited."""
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONPATH=os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1", **extra)
    return env


def torchrun_command(args: list, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--standalone",
            "-m", "glidecli", *[str(a) for a in args]]


def glide_command(args: list) -> list[str]:
    return [sys.executable, "-m", "glidecli", *[str(a) for a in args]]


def run(command: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=glide_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, check=False)


def rank_pid(launcher: subprocess.Popen, rank: int, timeout: float = 60) -> int:
    """The process id of rank `rank` among the launcher's children (Linux: reads /proc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            parent = next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), "")
            if parent == str(launcher.pid) and f"RANK={rank}".encode() in environ:
                return int(entry.name)
        time.sleep(0.1)
    raise TimeoutError(f"rank {rank} of process {launcher.pid} did not start")


def wait_for(condition, timeout: float = 120, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition did not come true in time")
        time.sleep(every)


def kill_rank_when(args: list, condition, rank: int = 1, timeout: float = 120) -> int:
    """Run `glide ARGS` on 2 ranks, SIGKILL rank `rank` once `condition()` holds, and return
    torchrun's exit status (it stops the other ranks itself)."""
    launcher = subprocess.Popen(torchrun_command(args), env=glide_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        victim = rank_pid(launcher, rank)
        wait_for(condition, timeout)
        os.kill(victim, signal.SIGKILL)
        return launcher.wait(timeout=timeout)
    finally:
        if launcher.poll() is None:
            launcher.kill()
