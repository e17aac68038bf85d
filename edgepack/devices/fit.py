"""The per-core rates of the latency estimate, fitted from published timings.

Two data files hold the evidence:
- data/published_latency.toml: published milliseconds per inference (model, device,
  precision, threads, source section), and each device's core, clock and big-core count;
- data/instruction_counts.toml: edgepack's measured guest instructions per inference of
  the same architectures, counted under qemu on a CPU model (bench/count_published_models.py).

Every published row names its runtime (its source's `runtime`): XNNPACK's own
benchmark, whose kernels the counts run, or another one (TF-Lite's 2019 built-in
kernels in the MobileNetV3 checkpoints' table). Rows are fitted per device, runtime and
precision, so another runtime's rows get rates of their own and never move the
XNNPACK-fitted rates the profiles ship (SHIPPED_RUNTIME).

The model (devices/estimate.py) is

    ms = instructions / (rate * clock * threads * efficiency)

`rate` is instructions retired per cycle per core on NN kernels; `efficiency` the
per-thread scaling of `threads` cores (1 for one thread), which grows with the model's
instructions per inference (`scaling`: published speed-ups on 4 threads run from 2.3x for
MobileNet v3-Small to 3.2x for v1). Fitted per device, runtime and precision in log
space (errors are ratios): `rate` is the geometric mean over the single-threaded rows; the
scaling curve a least-squares line of log(speed-up per thread) over log(instructions),
where a device has both. A device published only multi-threaded (the Raspberry Pi
boards) takes the Pixel 2's curve (the one 4-big-core phone), which fixes its rate at the
published thread count and leaves other thread counts unvalidated.

`leave_one_model_out` fits each device (and runtime, precision) on all models but one
and estimates the held-out model's rows: the error an estimate of an unseen model can
expect.
"""

from __future__ import annotations

import math
import statistics
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).with_name("data")
PUBLISHED_FILE = DATA / "published_latency.toml"
COUNTS_FILE = DATA / "instruction_counts.toml"
COUNT_COMMAND = ("python bench/count_published_models.py export --out DIR && "
                 "python bench/count_published_models.py count MODEL PRECISION CPU --out DIR (per row) && "
                 "python bench/count_published_models.py collect --out DIR")
COUNT_RUNTIME = "litert+xnnpack"
# The artifact format whose runtime executes the counted program: LiteRT with its XNNPACK
# delegate, the kernels the published end2end_bench figures time. Other formats' counts
# (ONNX Runtime's MLAS kernels, ExecuTorch's own XNNPACK build) are other programs.
COUNT_FORMAT = "tflite"
# The published runtime whose rows the shipped rates are fitted on: the kernels the counts
# run. Rows of other runtimes validate how well these counts rank models elsewhere.
SHIPPED_RUNTIME = "xnnpack end2end_bench"
# The 4-thread efficiency of the only 4-big-core phone in the published tables (Pixel 2),
# used to split a board's multi-thread-only fit into a per-core rate and a scaling.
ASSUMED_EFFICIENCY_DEVICE = "pixel-2"
REF_INSTRUCTIONS = 1e8
WITHIN = 0.25


@dataclass(frozen=True)
class Device:
    id: str
    core: str
    big_cores: int
    clock_ghz: float
    isa: str
    counted_on: str
    counted_on_why: str


@dataclass(frozen=True)
class Row:
    model: str
    device: str
    precision: str
    threads: int
    ms: float
    source: str
    runtime: str                # the source's runtime


@dataclass(frozen=True)
class Fit:
    device: str
    precision: str
    counted_on: str
    rate: float                 # instructions per cycle per core, one thread
    efficiency: float           # per-thread scaling at the device's big-core count, at REF_INSTRUCTIONS
    efficiency_slope: float     # its growth with instructions per inference (see scaling)
    efficiency_measured: bool   # False: assumed_efficiency() (no single-threaded rows)
    models: tuple[str, ...]
    rows: int
    runtime: str = SHIPPED_RUNTIME


@dataclass(frozen=True)
class Held:
    """One published row estimated by a fit that never saw its model."""

    row: Row
    instructions: float
    estimate_ms: float

    @property
    def error(self) -> float:
        return self.estimate_ms / self.row.ms - 1


@lru_cache(maxsize=1)
def published() -> tuple[dict[str, Device], tuple[Row, ...], dict]:
    doc = tomllib.loads(PUBLISHED_FILE.read_text())
    devices = {d["id"]: Device(d["id"], d["core"], d["big_cores"], d["clock_ghz"], d["isa"], d["counted_on"],
                               d["counted_on_why"]) for d in doc["device"]}
    sources = doc["source"]
    for r in doc["row"]:
        if r["device"] not in devices:
            raise ValueError(f"{PUBLISHED_FILE.name}: row for unknown device {r['device']!r}")
        if r["source"] not in sources:
            raise ValueError(f"{PUBLISHED_FILE.name}: row from unknown source {r['source']!r}")
    rows = tuple(Row(r["model"], r["device"], r["precision"], r["threads"], float(r["ms"]), r["source"],
                     sources[r["source"]]["runtime"]) for r in doc["row"])
    return devices, rows, sources


@lru_cache(maxsize=1)
def counts() -> dict[tuple[str, str, str], float]:
    """(model, precision, qemu cpu) -> instructions per inference, one thread."""
    if not COUNTS_FILE.is_file():
        return {}
    doc = tomllib.loads(COUNTS_FILE.read_text())
    return {(c["model"], c["precision"], c["qemu_cpu"]): float(c["instructions"]) for c in doc.get("count", ())
            if c["runtime"] == COUNT_RUNTIME and c["threads"] == 1}


def _geomean(xs) -> float:
    xs = list(xs)
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def scaling(efficiency: float, slope: float, instructions: float) -> float:
    """Per-thread scaling of a model of `instructions` per inference: `efficiency` at
    REF_INSTRUCTIONS, growing as instructions ** slope (more work per thread amortizes
    the synchronisation between layers), never above 1."""
    return min(1.0, efficiency * (instructions / REF_INSTRUCTIONS) ** slope)


def _efficiency_curve(data: list[tuple[Row, float]], threads: int) -> tuple[float, float] | None:
    """(efficiency at REF_INSTRUCTIONS, slope) from the models published at 1 and at
    `threads` threads: a least-squares line of log(speed-up / threads) over
    log(instructions). One model fixes the level only (slope 0); none: None."""
    ms: dict[str, dict[int, float]] = {}
    size: dict[str, float] = {}
    for r, n in data:
        ms.setdefault(r.model, {})[r.threads] = r.ms
        size[r.model] = n
    points = [(math.log(size[m] / REF_INSTRUCTIONS), math.log(t[1] / t[threads] / threads))
              for m, t in ms.items() if threads > 1 and 1 in t and threads in t]
    if not points:
        return None
    if len(points) == 1:
        return math.exp(points[0][1]), 0.0
    mx = statistics.mean(x for x, _ in points)
    my = statistics.mean(y for _, y in points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    return math.exp(my - slope * mx), slope


def counted_rows(device: str, precision: str, *, runtime: str = SHIPPED_RUNTIME, counted_on: str | None = None,
                 exclude_model: str | None = None) -> list[tuple[Row, float]]:
    """The device's published rows of `precision` timed on `runtime` that have a count on
    `counted_on` (the device's own counted_on by default), with that count."""
    devices, rows, _ = published()
    cpu = counted_on or devices[device].counted_on
    table = counts()
    return [(r, table[(r.model, r.precision, cpu)]) for r in rows
            if r.device == device and r.precision == precision and r.runtime == runtime and r.model != exclude_model
            and (r.model, r.precision, cpu) in table]


def assumed_efficiency(exclude_model: str | None = None) -> tuple[float, float]:
    """The measured multi-thread scaling curve (efficiency, slope) of
    ASSUMED_EFFICIENCY_DEVICE, fp32, on all models but `exclude_model`."""
    devices, _, _ = published()
    dev = devices[ASSUMED_EFFICIENCY_DEVICE]
    curve = _efficiency_curve(counted_rows(dev.id, "fp32", exclude_model=exclude_model), dev.big_cores)
    if curve is None:
        raise ValueError(f"{PUBLISHED_FILE.name}: {dev.id} needs counted single- and multi-threaded rows")
    return curve


def fit(device: str, precision: str, *, runtime: str = SHIPPED_RUNTIME, counted_on: str | None = None,
        exclude_model: str | None = None) -> Fit | None:
    """The device's rate (and scaling) from its published rows of `precision` timed on
    `runtime` that have a count on `counted_on`; None when there are none."""
    devices, _, _ = published()
    dev = devices[device]
    cpu = counted_on or dev.counted_on
    data = counted_rows(device, precision, runtime=runtime, counted_on=cpu, exclude_model=exclude_model)
    if not data:
        return None
    multi = dev.big_cores
    curve = _efficiency_curve(data, multi)
    measured = curve is not None
    efficiency, slope = curve if curve else assumed_efficiency(exclude_model)
    per_row = []
    for r, n in data:
        if r.threads not in (1, multi):
            raise ValueError(f"{device}: a row with {r.threads} threads; the fit knows 1 and {multi}")
        if measured and r.threads != 1:
            continue   # single-thread rows fix the rate; the pairs fixed the scaling
        scale = 1.0 if r.threads == 1 else r.threads * scaling(efficiency, slope, n)
        per_row.append(n / (r.ms * 1e-3 * dev.clock_ghz * 1e9 * scale))
    return Fit(device, precision, cpu, _geomean(per_row), efficiency, slope, measured,
               tuple(sorted({r.model for r, _ in data})), len(data), runtime)


def estimate_ms(f: Fit, instructions: float, threads: int) -> float:
    devices, _, _ = published()
    scale = 1.0 if threads == 1 else threads * scaling(f.efficiency, f.efficiency_slope, instructions)
    return instructions / (f.rate * devices[f.device].clock_ghz * 1e9 * scale) * 1e3


def leave_one_model_out(device: str, precision: str, *, runtime: str = SHIPPED_RUNTIME,
                        counted_on: str | None = None) -> list[Held]:
    """Every counted row of the device on `runtime`, estimated by a fit on the device's
    other models of that runtime and precision (rows whose model is the only one of its
    runtime and precision have no held-out fit and are left out)."""
    out = []
    for row, n in counted_rows(device, precision, runtime=runtime, counted_on=counted_on):
        f = fit(device, precision, runtime=runtime, counted_on=counted_on, exclude_model=row.model)
        if f is not None:
            out.append(Held(row, n, estimate_ms(f, n, row.threads)))
    return out


def all_held_out() -> list[Held]:
    """Every published row held out, per device, runtime (shipped runtime first) and precision."""
    devices, rows, _ = published()
    out = []
    for device in devices:
        mine = [r for r in rows if r.device == device]
        for runtime in sorted({r.runtime for r in mine}, key=lambda rt: (rt != SHIPPED_RUNTIME, rt)):
            for precision in sorted({r.precision for r in mine if r.runtime == runtime}):
                out += leave_one_model_out(device, precision, runtime=runtime)
    return out


@dataclass(frozen=True)
class ErrorSummary:
    rows: int
    median_abs: float | None
    within: float | None        # share of rows within +-WITHIN
    why_unvalidated: str = "no held-out published rows"

    def text(self) -> str:
        if not self.rows:
            return f"unvalidated ({self.why_unvalidated})"
        return (f"expected +-{self.median_abs * 100:.0f} % from {self.rows} held-out published rows "
                f"({self.within * 100:.0f} % within +-{WITHIN * 100:.0f} %)")

    def as_dict(self) -> dict:
        if not self.rows:
            return {"validated": False, "text": self.text()}
        return {"validated": True, "held_out_rows": self.rows, "median_abs_error": round(self.median_abs, 4),
                "within_25pct": round(self.within, 4), "text": self.text()}


def summarize(held: list[Held], *, why_unvalidated: str = "no held-out published rows") -> ErrorSummary:
    if not held:
        return ErrorSummary(0, None, None, why_unvalidated)
    errs = [abs(h.error) for h in held]
    return ErrorSummary(len(held), statistics.median(errs), sum(e <= WITHIN for e in errs) / len(errs))


# --------------------------------------------------------------------------- shipped rates

@dataclass(frozen=True)
class RateSource:
    """Where one profile cluster's rate comes from: a published device's rows, counted on
    a qemu CPU model. `same_core`: the published device has this very core (its held-out
    error applies); otherwise the rate is borrowed from a related core, unvalidated."""

    profile: str
    core: str
    precision: str
    device: str
    counted_on: str
    same_core: bool


RATE_SOURCES = (
    RateSource("raspberry-pi-4", "cortex-a72", "fp32", "rpi4-arm64", "cortex-a72", True),
    RateSource("raspberry-pi-4", "cortex-a72", "int8", "rpi4-arm64", "cortex-a72", True),
    RateSource("cortex-a53-iot", "cortex-a53", "fp32", "rpi3plus", "cortex-a53", True),
    RateSource("cortex-a53-iot", "cortex-a53", "int8", "rpi3plus", "cortex-a53", True),
    # No published XNNPACK figure for the A76, X1, A78 or Neoverse N1: the A75-class
    # Pixel 3a is the newest core in the tables, conservative for wider cores. Its rows are
    # divided into counts on the profile's own CPU model, so the rate converts the very
    # program the estimate counts.
    RateSource("raspberry-pi-5", "cortex-a76", "fp32", "pixel-3a", "cortex-a76", False),
    RateSource("pixel-7", "cortex-x1", "fp32", "pixel-3a", "cortex-a76", False),
    RateSource("pixel-7", "cortex-a78", "fp32", "pixel-3a", "cortex-a76", False),
    RateSource("graviton2", "neoverse-n1", "fp32", "pixel-3a", "neoverse-n1", False),
    # The A55 is rated as its in-order, dual-issue predecessor A53.
    RateSource("pixel-7", "cortex-a55", "fp32", "rpi3plus", "cortex-a53", False),
    RateSource("pixel-7", "cortex-a55", "int8", "rpi3plus", "cortex-a53", False),
)


def source_for(profile: str, core: str, precision: str) -> RateSource | None:
    return next((s for s in RATE_SOURCES if (s.profile, s.core, s.precision) == (profile, core, precision)), None)


def shipped_rate(source: RateSource) -> Fit | None:
    return fit(source.device, source.precision, counted_on=source.counted_on)


def shipped_efficiency(source: RateSource, cluster_cores: int) -> tuple[float, float]:
    """The multi-thread scaling (efficiency, slope) a cluster of `cluster_cores` cores
    ships: its source device's fitted curve when that device was published at as many
    threads as the cluster has cores, else the assumed one (ASSUMED_EFFICIENCY_DEVICE's)."""
    devices, _, _ = published()
    f = shipped_rate(source)
    if f is not None and devices[source.device].big_cores == cluster_cores:
        return f.efficiency, f.efficiency_slope
    return assumed_efficiency()


def expected_error(profile: str, core: str, precision: str, *, threads: int, fmt: str | None = COUNT_FORMAT) -> ErrorSummary:
    """The held-out error an estimate for this profile's cluster, precision, thread count
    and artifact format can expect: its source device's leave-one-model-out error on rows
    of that thread count, when that device has this very core and the format's runtime
    ran the counted kernels. Anything else is unvalidated."""
    if fmt != COUNT_FORMAT:
        return summarize([], why_unvalidated=f"rates are fitted on {COUNT_RUNTIME} counts; "
                                            f"{fmt or 'an unnamed format'} runs other kernels")
    source = source_for(profile, core, precision)
    if source is None:
        return summarize([], why_unvalidated=f"no published {precision} figure was fitted for {core}")
    if not source.same_core:
        return summarize([], why_unvalidated=f"{core} is rated from another core's published rows ({source.device})")
    held = [h for h in leave_one_model_out(source.device, precision, counted_on=source.counted_on) if h.row.threads == threads]
    return summarize(held, why_unvalidated=f"{source.device} published {precision} rows at other thread counts only")


def main() -> None:
    """Print each shipped rate as the profile TOML stores it (rounded) with its evidence."""
    from edgepack.config.loader import profiles_catalog

    devices, _, _ = published()
    catalog = profiles_catalog()
    print(f"{'profile':16} {'cluster':12} {'prec':5} {'from':11} {'counted on':12} {'rate':>6} {'eff':>6} {'slope':>6}  models")
    for s in RATE_SOURCES:
        f = shipped_rate(s)
        if f is None:
            print(f"{s.profile:16} {s.core:12} {s.precision:5} {s.device:11} {s.counted_on:12}  (no counts)")
            continue
        cores = next(c.count for c in catalog.load(s.profile).clusters if c.core == s.core)
        eff, slope = shipped_efficiency(s, cores)
        measured = f.efficiency_measured and devices[s.device].big_cores == cores
        print(f"{s.profile:16} {s.core:12} {s.precision:5} {s.device:11} {s.counted_on:12} {f.rate:6.3f} "
              f"{eff:6.3f} {slope:6.3f}{'' if measured else '*'} {', '.join(f.models)}")
    print(f"* assumed: {ASSUMED_EFFICIENCY_DEVICE}'s measured {devices[ASSUMED_EFFICIENCY_DEVICE].big_cores}-thread "
          f"scaling (no single-threaded rows of the source device at this core count)")


if __name__ == "__main__":
    main()
