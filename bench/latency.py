"""How far the latency estimate is from published timings of models it was not fitted on.

For every published row (edgepack/devices/data/published_latency.toml) with an
instruction count (data/instruction_counts.toml), the device's rate is fitted on its
other models' rows of the same runtime and precision and the held-out row estimated
(leave-one-model-out, edgepack.devices.fit). Prints model x device x runtime x precision
x threads: published ms, estimate, error (the device profile each row validates beside
its device: only rows of the runtime the shipped rates are fitted on validate one); then
the median absolute error and the shares within +-25 % and +-30 %, overall, per
published runtime, per published device (and per device and runtime where a device has
rows of two), for MobileNetV3 int8, and per device profile, each against the bar
(median <= 20 %, >= 80 % within +-30 %); then, per artifact format and precision, whether a build's estimate is
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


LABEL = 44


def line(label: str, held: list) -> str:
    s = fit.summarize(held)
    if not s.rows:
        return f"{label:{LABEL}} no held-out rows"
    within_30 = sum(abs(h.error) <= BAR_WITHIN for h in held) / len(held)
    met = s.median_abs <= BAR_MEDIAN and within_30 >= BAR_SHARE
    return (f"{label:{LABEL}} {s.rows:3d} rows  median |error| {s.median_abs * 100:5.1f} %  within +-25 %: {s.within * 100:5.1f} %"
            f"  within +-30 %: {within_30 * 100:5.1f} %  bar {'met' if met else 'NOT met'}")


def profiles_of(device: str, precision: str, runtime: str) -> str:
    """The device profiles whose rate this published device's rows of `precision` validate
    (same core, and the runtime the shipped rates are fitted on): the rest borrow a rate
    and are unvalidated."""
    if runtime != fit.SHIPPED_RUNTIME:
        return "-"
    names = sorted({s.profile for s in fit.RATE_SOURCES if (s.device, s.precision, s.same_core) == (device, precision, True)})
    return ", ".join(names) or "-"


def main() -> int:
    devices, rows, _ = fit.published()
    held = fit.all_held_out()
    if not held:
        print(f"no published row has an instruction count in {fit.COUNTS_FILE}: run bench/count_published_models.py",
              file=sys.stderr)
        return 2
    print(f"estimates divide {fit.COUNT_RUNTIME} instruction counts (edgepack's LiteRT export, one thread, qemu) "
          f"into published timings; leave-one-model-out per device, published runtime and precision; "
          f"shipped rates: {fit.SHIPPED_RUNTIME} rows only\n")
    print(f"{'model':32} {'device':11} {'profile':15} {'runtime (published)':22} {'prec':5} {'thr':>3} {'counted on':11} "
          f"{'instr (M)':>9} {'published':>9} {'estimate':>9} {'error':>7}")
    for h in held:
        r = h.row
        print(f"{r.model:32} {r.device:11} {profiles_of(r.device, r.precision, r.runtime):15} {r.runtime:22} {r.precision:5} "
              f"{r.threads:3d} {devices[r.device].counted_on:11} {h.instructions / 1e6:9.1f} {r.ms:9.1f} "
              f"{h.estimate_ms:9.1f} {h.error * 100:+6.1f}%")
    uncounted = len(rows) - len({(h.row.model, h.row.device, h.row.runtime, h.row.precision, h.row.threads) for h in held})
    print(f"\n{len(held)} held-out rows of {len(rows)} published ({uncounted} without a held-out estimate: "
          f"no count yet, or the only model of its precision on its device); "
          f"bar: median |error| <= {BAR_MEDIAN * 100:.0f} %, >= {BAR_SHARE * 100:.0f} % of rows within "
          f"+-{BAR_WITHIN * 100:.0f} %")
    print(line("overall", held))
    runtimes = sorted({r.runtime for r in rows}, key=lambda rt: (rt != fit.SHIPPED_RUNTIME, rt))
    for rt in runtimes:
        print(line(f"runtime {rt}", [h for h in held if h.row.runtime == rt]))
    for device in devices:
        mine = [h for h in held if h.row.device == device]
        print(line(f"device {device}", mine))
        if len({h.row.runtime for h in mine}) > 1:
            for rt in runtimes:
                print(line(f"device {device}, {rt}", [h for h in mine if h.row.runtime == rt]))
    v3_int8 = [h for h in held if h.row.model.startswith("mobilenet_v3") and h.row.precision == "int8"]
    print(line("MobileNetV3 int8 (all devices, runtimes)", v3_int8))
    for profile in sorted({s.profile for s in fit.RATE_SOURCES}):
        same = {(s.device, s.precision) for s in fit.RATE_SOURCES if s.profile == profile and s.same_core}
        mine = [h for h in held if (h.row.device, h.row.precision) in same and h.row.runtime == fit.SHIPPED_RUNTIME]
        print(line(f"profile {profile}", mine) if same else f"{'profile ' + profile:{LABEL}} unvalidated (rated from another core)")
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
