"""What changed between two releases, and whether any of it is a regression.

Either side may be a release archive, a dist folder or a manifest.json. Artifacts are
matched by (format, precision). A regression is: accuracy down by more than a number of
points, size up by more than a percentage, host latency up by more than a percentage
*and* an absolute floor (sub-0.01 ms timings jitter by more than 25% run to run), or an
artifact that disappeared. Latency is compared only between measurements taken on the
same kind of machine with the same runner; otherwise the diff says so instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgepack.errors import ConfigError

DIFF_SCHEMA = "edgepack.diff/1"


@dataclass(frozen=True)
class Thresholds:
    max_accuracy_drop_pt: float = 0.5
    max_size_increase_pct: float = 5.0
    max_latency_increase_pct: float = 25.0
    min_latency_increase_ms: float = 0.01

    def __post_init__(self):
        for name, value in asdict(self).items():
            if value < 0:
                raise ConfigError(f"--{name.replace('_', '-')}: must not be negative, got {value}")


@dataclass(frozen=True)
class Change:
    area: str            # artifact, toolchain, recipe, project, source, data
    item: str            # e.g. "tflite int8", "torch"
    field: str
    old: object
    new: object
    note: str = ""
    regression: bool = False


@dataclass(frozen=True)
class DiffResult:
    old: str
    new: str
    old_version: str
    new_version: str
    thresholds: Thresholds
    changes: tuple[Change, ...] = field(default_factory=tuple)

    @property
    def regressions(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.regression)

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0

    def as_dict(self) -> dict:
        return {
            "schema": DIFF_SCHEMA,
            "old": {"source": self.old, "version": self.old_version},
            "new": {"source": self.new, "version": self.new_version},
            "thresholds": asdict(self.thresholds),
            "ok": not self.regressions,
            "exit_code": self.exit_code,
            "regressions": len(self.regressions),
            "changes": [asdict(c) for c in self.changes],
        }


def load_any_manifest(path: Path) -> dict:
    """The manifest of a release archive, a dist folder, or a manifest.json file."""
    from edgepack.release.manifest import load_manifest

    if path.is_dir():
        return load_manifest(path / "manifest.json", what=str(path))
    if not path.is_file():
        raise ConfigError(f"{path}: no such release archive, dist folder or manifest")
    if path.name.endswith((".tar.gz", ".tgz")):
        from edgepack.release.reading import scan_release

        # The whole archive is checked, and held to its manifest's listing, before the
        # manifest is trusted: a diff reads releases it did not make.
        return scan_release(path).manifest
    return load_manifest(path)


def _pct(old: float, new: float) -> float | None:
    return None if not old else (new - old) / old * 100.0


def diff_manifests(old: dict, new: dict, thresholds: Thresholds = Thresholds(), *,
                   old_label: str = "old", new_label: str = "new") -> DiffResult:
    t = thresholds
    changes: list[Change] = []
    op, np_ = old.get("project") or {}, new.get("project") or {}
    for key in ("name", "version"):
        if op.get(key) != np_.get(key):
            changes.append(Change("project", "project", key, op.get(key), np_.get(key)))
    if old.get("target") != new.get("target"):
        changes.append(Change("project", "target", "name", old.get("target"), new.get("target"),
                              note="different targets: the comparison is across deployments"))
    if (old.get("source") or {}).get("sha256") != (new.get("source") or {}).get("sha256"):
        changes.append(Change("source", "weights", "sha256", (old.get("source") or {}).get("sha256"),
                              (new.get("source") or {}).get("sha256"), note="the source model changed"))
    for section in ("calibration", "evaluation"):
        a, b = (old.get(section) or {}).get("sha256"), (new.get(section) or {}).get("sha256")
        if a != b:
            changes.append(Change("data", section, "sha256", a, b,
                                  note="accuracy is measured on different data" if section == "evaluation" else ""))
    otc, ntc = old.get("toolchain") or {}, new.get("toolchain") or {}
    for pkg in sorted(set(otc) | set(ntc)):
        if otc.get(pkg) != ntc.get(pkg):
            changes.append(Change("toolchain", pkg, "version", otc.get(pkg), ntc.get(pkg)))
    if (old.get("recipe") or {}) != (new.get("recipe") or {}):
        changes.append(Change("recipe", "recipe", "passes", old.get("recipe") or {}, new.get("recipe") or {}))

    def by_key(m):
        return {(a.get("format"), a.get("precision")): a for a in m.get("artifacts") or []}

    oa, na = by_key(old), by_key(new)
    for key in sorted(set(oa) | set(na)):
        item = f"{key[0]} {key[1]}"
        if key not in na:
            changes.append(Change("artifact", item, "present", True, False, note="the new release dropped this artifact",
                                  regression=True))
            continue
        if key not in oa:
            changes.append(Change("artifact", item, "present", False, True, note="new artifact"))
            continue
        a, b = oa[key], na[key]
        if a.get("sha256") != b.get("sha256"):
            changes.append(Change("artifact", item, "sha256", a.get("sha256"), b.get("sha256")))
        if a.get("size_bytes") != b.get("size_bytes"):
            pct = _pct(a["size_bytes"], b["size_bytes"])
            changes.append(Change("artifact", item, "size_bytes", a["size_bytes"], b["size_bytes"],
                                  note=f"{pct:+.1f}%" if pct is not None else "",
                                  regression=pct is not None and pct > t.max_size_increase_pct))
        if a.get("accuracy") is not None and b.get("accuracy") is not None and a["accuracy"] != b["accuracy"]:
            drop_pt = (a["accuracy"] - b["accuracy"]) * 100.0
            changes.append(Change("artifact", item, "accuracy", a["accuracy"], b["accuracy"], note=f"{-drop_pt:+.2f} pt",
                                  regression=drop_pt > t.max_accuracy_drop_pt))
        la, lb = a.get("latency_ms") or {}, b.get("latency_ms") or {}
        if "p50" in la and "p50" in lb:
            same_place = (la.get("machine"), la.get("runner"), la.get("threads")) == (lb.get("machine"), lb.get("runner"), lb.get("threads"))
            pct = _pct(la["p50"], lb["p50"])
            if not same_place:
                changes.append(Change("artifact", item, "latency_ms.p50", la["p50"], lb["p50"],
                                      note="not compared: measured on different machines, runners or thread counts"))
            elif pct is not None and abs(pct) >= 1.0:
                slower = pct > t.max_latency_increase_pct and (lb["p50"] - la["p50"]) > t.min_latency_increase_ms
                changes.append(Change("artifact", item, "latency_ms.p50", la["p50"], lb["p50"], note=f"{pct:+.1f}% (host)",
                                      regression=slower))
    return DiffResult(old_label, new_label, str(op.get("version")), str(np_.get("version")), thresholds, tuple(changes))


def diff_paths(old: Path, new: Path, thresholds: Thresholds = Thresholds()) -> DiffResult:
    from dataclasses import replace

    from edgepack.release.output_diff import recorded_output_changes

    om, nm = load_any_manifest(old), load_any_manifest(new)
    result = diff_manifests(om, nm, thresholds, old_label=str(old), new_label=str(new))
    return replace(result, changes=result.changes + tuple(recorded_output_changes(old, new, om, nm)))
