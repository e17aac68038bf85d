"""How far the latency estimate is from published timings of models it was not fitted on.

For every published row (edgepack/devices/data/published_latency.toml) with an
instruction count (data/instruction_counts.toml), the device's rate is fitted on its
other models' rows and the held-out row estimated (leave-one-model-out,
edgepack.devices.fit). Prints model x device x runtime x precision x threads: published
ms, estimate, error (the device profile each row validates beside its device); then the
median absolute error and the shares within +-25 % and +-30 %, overall, per published
device and per device profile, each against the bar (median <= 20 %, >= 80 % within
+-30 %); then, per artifact format and precision, whether a build's estimate is
validated by these rows or says "unvalidated" (no published rows of its runtime or
precision).

    python bench/latency.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgepack.devices import fit  # noqa: E402


BAR_MEDIAN, BAR_WITHIN, BAR_SHARE = 0.20, 0.30, 0.80


def line(label: str, held: list) -> str:
    s = fit.summarize(held)
    if not s.rows:
        return f"{label:28} no held-out rows"
    within_30 = sum(abs(h.error) <= BAR_WITHIN for h in held) / len(held)
    met = s.median_abs <= BAR_MEDIAN and within_30 >= BAR_SHARE
    return (f"{label:28} {s.rows:3d} rows  median |error| {s.median_abs * 100:5.1f} %  within +-25 %: {s.within * 100:5.1f} %"
            f"  within +-30 %: {within_30 * 100:5.1f} %  bar {'met' if met else 'NOT met'}")


def profiles_of(device: str, precision: str) -> str:
    """The device profiles whose rate this published device's rows of `precision` validate
    (same core): the rest borrow a rate and are unvalidated."""
    names = sorted({s.profile for s in fit.RATE_SOURCES if (s.device, s.precision, s.same_core) == (device, precision, True)})
    return ", ".join(names) or "-"


def main() -> int:
    devices, rows, sources = fit.published()
    held = fit.all_held_out()
    if not held:
        print(f"no published row has an instruction count in {fit.COUNTS_FILE}: run bench/count_published_models.py",
              file=sys.stderr)
        return 2
    runtime = {key: s["runtime"] for key, s in sources.items()}
    print(f"estimates divide {fit.COUNT_RUNTIME} instruction counts (edgepack's LiteRT export, one thread, qemu) "
          f"into published timings; leave-one-model-out\n")
    print(f"{'model':20} {'device':11} {'profile':15} {'runtime (published)':22} {'prec':5} {'thr':>3} {'counted on':11} "
          f"{'instr (M)':>9} {'published':>9} {'estimate':>9} {'error':>7}")
    for h in held:
        r = h.row
        print(f"{r.model:20} {r.device:11} {profiles_of(r.device, r.precision):15} {runtime[r.source]:22} {r.precision:5} "
              f"{r.threads:3d} {devices[r.device].counted_on:11} {h.instructions / 1e6:9.1f} {r.ms:9.1f} "
              f"{h.estimate_ms:9.1f} {h.error * 100:+6.1f}%")
    uncounted = len(rows) - len({(h.row.model, h.row.device, h.row.precision, h.row.threads) for h in held})
    print(f"\n{len(held)} held-out rows of {len(rows)} published ({uncounted} without a held-out estimate: "
          f"no count yet, or the only model of its precision on its device); "
          f"bar: median |error| <= {BAR_MEDIAN * 100:.0f} %, >= {BAR_SHARE * 100:.0f} % of rows within "
          f"+-{BAR_WITHIN * 100:.0f} %")
    print(line("overall", held))
    for device in devices:
        print(line(f"device {device}", [h for h in held if h.row.device == device]))
    for profile in sorted({s.profile for s in fit.RATE_SOURCES}):
        same = {(s.device, s.precision) for s in fit.RATE_SOURCES if s.profile == profile and s.same_core}
        mine = [h for h in held if (h.row.device, h.row.precision) in same]
        print(line(f"profile {profile}", mine) if same else f"{'profile ' + profile:28} unvalidated (rated from another core)")
    # The same function every estimate's expected_error comes from, on the profile with
    # the most published rows of its own core.
    profile, core, threads = "raspberry-pi-4", "cortex-a72", 4
    print(f"\nwhat a build's estimate says per artifact format and precision ({profile}, {threads} threads):")
    for fmt in ("tflite", "executorch", "onnx"):
        for precision in ("fp32", "fp16", "int8", "int8-dynamic"):
            print(f"  {fmt:10} {precision:12} {fit.expected_error(profile, core, precision, threads=threads, fmt=fmt).text()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
