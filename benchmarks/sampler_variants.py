"""What benchmarks/sampler_steps.py compares: the samplers on their timestep grids (one table
row each), the row of measurements, and the units and step counts of the table."""

from __future__ import annotations

from dataclasses import dataclass, field

from glidecli.diffusion.schedule import Schedule, space_timesteps
from glidecli.diffusion.solver_steps import timesteps_for

LEVEL = 1 / 127.5  # one 8-bit level on the [-1, 1] scale
COSINE, LINEAR = "squaredcos_cap_v2", "linear"
COLUMNS = (10, 15, 20, 25, 27, 50, 100, 250)
GUIDANCE = 3.0  # GLIDE's default classifier-free guidance scale for the base model
STRESS_GUIDANCE = 10.0  # a strong scale some users pick, for the stability check


@dataclass(frozen=True)
class Variant:
    """One table row's sampler: a glidecli sampler on a timestep grid."""

    label: str
    sampler: str
    counts: tuple[int, ...]
    grid: str = "time"  # "time": uniform in t; "lambda": uniform in log-SNR; "fast27"; ddpm/ddim: their respacing
    learned_variance: bool = True  # ddpm only: False gives the posterior variance
    linear_only: bool = False

    def timesteps(self, schedule_name: str, count: int) -> list[int]:
        if self.grid == "fast27":  # (glide accepts this for plms only)
            return space_timesteps(1000, "fast27")
        if self.grid == "lambda":
            return timesteps_for(self.sampler, schedule_name, f"logsnr{count}")
        if self.sampler in ("plms", "dpmpp_2m", "dpmpp_2m_sde"):
            return timesteps_for(self.sampler, schedule_name, f"time{count}")
        # 27 DDIM steps on the linear schedule are GLIDE's upsampler preset.
        spec = "fast27" if (self.sampler == "ddim" and count == 27 and schedule_name == LINEAR) else str(count)
        return timesteps_for(self.sampler, schedule_name, spec)

    def schedule(self, schedule_name: str, count: int) -> Schedule:
        return Schedule.from_timesteps(schedule_name, self.timesteps(schedule_name, count))


DDPM = Variant("ddpm (learned var.)", "ddpm", (25, 50, 100, 250))
DDPM_PV = Variant("ddpm (posterior var.)", "ddpm", (25, 50, 100, 250), learned_variance=False)
DDIM = Variant("ddim", "ddim", (10, 15, 20, 27, 50))
PLMS = Variant("plms", "plms", (10, 15, 20, 25, 50))
DPMPP = Variant("dpmpp_2m", "dpmpp_2m", (10, 15, 20, 25, 50))
DPMPP_LAMBDA = Variant("dpmpp_2m, log-SNR grid", "dpmpp_2m", (10, 15, 20, 25, 50), grid="lambda")
PLMS_LAMBDA = Variant("plms, log-SNR grid", "plms", (10, 15, 20, 25, 50), grid="lambda")
SDE = Variant("dpmpp_2m_sde", "dpmpp_2m_sde", (10, 15, 20, 25, 50))
SDE_LAMBDA = Variant("dpmpp_2m_sde, log-SNR grid", "dpmpp_2m_sde", (10, 15, 20, 25, 50), grid="lambda")
STOCHASTIC = (DDPM, DDPM_PV, SDE, SDE_LAMBDA)
PLMS_FAST27 = Variant("plms, fast27 timesteps", "plms", (27,), grid="fast27", linear_only=True)
DPMPP_FAST27 = Variant("dpmpp_2m, fast27 timesteps (what-if)", "dpmpp_2m", (27,), grid="fast27", linear_only=True)
ODE_VARIANTS = (DDIM, PLMS, PLMS_LAMBDA, DPMPP, DPMPP_LAMBDA, PLMS_FAST27, DPMPP_FAST27)


def limit_schedule(top: int, schedule_name: str) -> Schedule:
    """Every timestep from 0 to `top`: the process without respacing."""
    return Schedule.from_timesteps(schedule_name, list(range(top + 1)))


@dataclass
class Row:
    case: str
    label: str
    measure: str
    cells: dict[int, str] = field(default_factory=dict)
    value: dict[int, float] = field(default_factory=dict)  # to the target / the ODE solution
    own: dict[int, float] = field(default_factory=dict)  # analytic ODE rows: to their own limit

    def put(self, count: int, value: float, own: float | None = None) -> None:
        self.value[count] = value
        if own is None:
            self.cells[count] = f"{value:.2f}"
        else:
            self.own[count] = own
            self.cells[count] = f"{value:.2f} ({own:.2f})"

