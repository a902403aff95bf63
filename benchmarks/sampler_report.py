"""The report of benchmarks/sampler_steps.py: its one markdown table, and below it per case the
fewest steps that reach the default sampler's error or land within one 8-bit level."""

from __future__ import annotations

import math

from harness import md_row, table_header
from sampler_variants import (
    COLUMNS,
    DDIM,
    DDPM,
    DPMPP,
    DPMPP_FAST27,
    DPMPP_LAMBDA,
    PLMS,
    PLMS_FAST27,
    SDE,
    SDE_LAMBDA,
    STRESS_GUIDANCE,
    Row,
)

SOLVERS = (PLMS.label, DPMPP.label, DPMPP_LAMBDA.label)


def markdown_table(rows: list[Row]) -> list[str]:
    lines = table_header(["case", "sampler", "measure (8-bit levels)", *[str(c) for c in COLUMNS], "value"])
    for row in rows:
        single = row.cells.get(0, "")
        cells = [row.cells.get(c, "") for c in COLUMNS]
        lines.append(md_row([row.case, row.label, row.measure, *cells, single]))
    return lines


def smallest(row: Row, limit: float, own: bool = False) -> str:
    values = row.own if own else row.value
    counts = sorted(c for c, v in values.items() if v <= limit)
    # The first count from which every larger count also stays within the limit.
    for c in counts:
        if all(values[k] <= limit for k in values if k >= c):
            return str(c)
    return f">{max(values)}" if values else "-"


def fewest_at_least(row: Row, score: float) -> str:
    """The smallest count from which every larger count scores at least `score`."""
    counts = [c for c in sorted(row.value) if all(row.value[k] >= score for k in row.value if k >= c)]
    return str(counts[0]) if counts else "-"


def summary(rows: list[Row]) -> list[str]:
    by_case: dict[str, dict[tuple[str, str], Row]] = {}
    for row in rows:
        by_case.setdefault(row.case, {})[(row.label, row.measure.split()[0])] = row
    lines = []
    for case, table in by_case.items():
        if case.startswith("analytic"):
            lines.append(analytic_summary(case, {label: row for (label, _), row in table.items()}))
            continue
        colours = {label: row for (label, kind), row in table.items() if kind == "pictures"}
        if colours:
            lines.append(colour_summary(case, colours))
            continue
        lines.append(network_summary(case, table))
    return lines


def analytic_summary(case: str, rows_of: dict[str, Row]) -> str:
    upsampler = "linear" in case
    if case.endswith(f"s={STRESS_GUIDANCE:g}"):
        within = ", ".join(f"{s} {smallest(rows_of[s], 1.0)}" for s in SOLVERS)
        ancestral = rows_of[DDPM.label].value[100]
        return (
            f"- {case}: within 1 level of own limit: {within}. ddpm-100 is {ancestral:.2f} from the ancestral "
            f"limit; {SDE_LAMBDA.label} within 1 level of it from {smallest(rows_of[SDE_LAMBDA.label], 1.0)} steps."
        )
    if upsampler:
        default = rows_of[DDIM.label].own[27]
        what = f"ddim-fast27 is {default:.2f} from its own limit"
        candidates = SOLVERS + (PLMS_FAST27.label, DPMPP_FAST27.label)
    else:
        floor = rows_of["noise floor"].value[0]
        what = f"ddpm-100 is {rows_of[DDPM.label].value[100]:.2f} from the target (noise floor {floor:.2f})"
        # Below the floor, a difference cannot be told from sampling noise at this N.
        default = max(rows_of[DDPM.label].value[100], floor)
        candidates = SOLVERS
    matches = ", ".join(f"{s} {smallest(rows_of[s], default, own=True)}" for s in candidates if s in rows_of)
    if not upsampler:  # stochastic solvers aim at the target itself, not at an ODE limit
        matches += ", " + ", ".join(f"{v.label} {smallest(rows_of[v.label], default)} (to the target)" for v in (SDE, SDE_LAMBDA))
    within = ", ".join(f"{s} {smallest(rows_of[s], 1.0, own=True)}" for s in SOLVERS)
    bound = "that" if upsampler else f"max(that, floor) = {default:.2f}"
    return f"- {case}: {what}. Own-limit error at most {bound}: {matches}. Within 1 level of own limit: {within}."


def colour_summary(case: str, colours: dict[str, Row]) -> str:
    reference = colours[DDPM.label].value[100]
    total = int(next(iter(colours.values())).measure.rsplit(" ", 1)[1])
    error = math.sqrt(reference * (1 - reference / total))  # binomial standard error
    return (
        f"- {case}: ddpm-100 gets {reference:.0f} of {total} pictures right (standard error {error:.1f}); "
        "fewest steps from which every count scores within one standard error of that or better: "
        + ", ".join(f"{label} {fewest_at_least(row, reference - error)}" for label, row in colours.items())
        + "."
    )


def network_summary(case: str, table: dict[tuple[str, str], Row]) -> str:
    ode = {label: row for (label, kind), row in table.items() if kind == "RMS"}
    text = f"- {case}: within 1 level RMS of the converged ODE: " + ", ".join(
        f"{s} {smallest(ode[s], 1.0)}" for s in SOLVERS if s in ode
    )
    if "linear" in case and DDIM.label in ode:
        default = ode[DDIM.label].value[27]
        text += f"; as close as ddim-fast27 ({default:.2f}): " + ", ".join(
            f"{s} {smallest(ode[s], default)}" for s in SOLVERS + (PLMS_FAST27.label, DPMPP_FAST27.label) if s in ode
        )
    stats = {label: row for (label, kind), row in table.items() if kind == "channel"}
    if stats:
        floor = stats["ddpm-100, other seeds"].value[100]
        text += f"; image statistics within ddpm-100's seed-to-seed floor ({floor:.2f}): " + ", ".join(
            f"{s} {smallest(stats[s], floor)}" for s in (PLMS.label, DPMPP.label) if s in stats
        )
    return text + "."
