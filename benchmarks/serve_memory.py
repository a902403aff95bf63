"""A long-running server's memory: the process's RSS after 50 and after 500 jobs on the shapes
models, with finished jobs expiring (--keep-jobs) and without (kept until the count cap).
Each job makes one 64x64 picture in a few steps; its events and status are read once, as a
client polling it would.

    python benchmarks/serve_memory.py [--jobs 500]
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from glidecli.files.manifest import load_manifest  # noqa: E402
from glidecli.serve.service import ServerConfig, Service  # noqa: E402

JOB = {"prompt": "a red circle on a blue background", "model": "shapes", "upsample-model": "shapes-upsample", "steps": "2", "upsample-steps": "2"}


def rss_mb() -> float:
    """The resident set size now (Linux: /proc), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(jobs: int, keep_minutes: float, checkpoints: tuple[int, ...], label: str) -> None:
    first = 0.0
    with tempfile.TemporaryDirectory() as folder:
        service = Service(ServerConfig(out=Path(folder) / "out", device="cpu", keep_jobs=keep_minutes, max_queue=jobs + 1),
                          load_manifest(ROOT / "models" / "weights.toml"))
        try:
            for index in range(1, jobs + 1):
                job = service.submit("generate", {**JOB, "seed": index})
                service.queue.wait(job)
                list(service.queue.events(job))
                if index in checkpoints:
                    time.sleep(0.01)
                    gc.collect()
                    rss = rss_mb()
                    first = first or rss
                    print(f"{label:>14} {index:>10} {rss:>8.1f} {len(service.queue.jobs()):>9} {rss / first:>15.3f}", flush=True)
        finally:
            service.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    args = parser.parse_args()
    checkpoints = (50, args.jobs // 2, args.jobs)
    print(f"{'keep jobs':>14} {'after jobs':>10} {'RSS MB':>8} {'jobs held':>9} {'RSS / RSS at 50':>15}")
    for label, minutes in (("0.001 min", 0.001), ("60 min", 60.0)):
        run(args.jobs, minutes, checkpoints, label)


if __name__ == "__main__":
    main()
