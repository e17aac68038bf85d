"""The emulated aarch64 environment: a Debian arm64 sysroot, the runtimes' aarch64 wheels
and a few native helpers, prepared once and cached under the user's cache folder.

No chroot, no root and no arm64 machine are needed: Debian's arm64 packages are unpacked
with `dpkg -x`, the runtimes' manylinux aarch64 wheels are installed with pip into a plain
folder, and `qemu-aarch64 -L SYSROOT` runs the guest programs against them. The folder is
keyed by everything that changes what runs in it (the runtime versions, the qemu version,
the native sources), built in a temporary folder and renamed into place, so a half-made
environment is never used and a second setup is a no-op.

    ~/.cache/edgepack/arm64-<key>/
      sysroot/        Debian arm64 python3.11, libstdc++6, libgomp1 and their dependencies
      site/           numpy, ai-edge-litert, onnxruntime (aarch64 wheels)
      executorch/     lib/ and include/ of ExecuTorch's aarch64 wheel (its Python is not used)
      bin/            et_runner, cpuinfo_probe (aarch64)
      plugin/         libinsn_count.so (host TCG plugin), qemu-plugin.h it was built from
      cpu/<model>/    one root per qemu CPU model: links into sysroot/ plus its own
                      proc/cpuinfo, because runtimes read /proc/cpuinfo through `-L` and
                      one file shared between models would make them pick wrong kernels
      manifest.json   what was installed (package versions, sizes, setup time)
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edgepack.errors import ToolchainError

LAYOUT = 1
DEBIAN_PACKAGES = ("python3.11", "libstdc++6", "libgomp1")
# Tools the dependency walk pulls in through Pre-Depends that nothing here runs.
_SKIP_PACKAGES = {"dpkg", "install-info", "tar", "perl-base", "debconf"}
# The same runtime versions the host uses (pyproject.toml), so a host/emulated comparison
# compares one runtime on two ISAs, not two releases. numpy (the runner script's) matches
# the host venv's; each format names its runtime's wheels (Format.aarch64_wheels).
NUMPY_WHEEL = {"numpy": "2.4.6"}


def wheels() -> dict[str, str]:
    from edgepack.formats import FORMATS

    out = dict(NUMPY_WHEEL)
    for fmt in FORMATS:
        out.update(fmt.aarch64_wheels)
    return out
PYTHON_TAG = ("3.11", "cp")
# Every manylinux tag a Debian 12 arm64 userland (glibc 2.36) can run; ai-edge-litert
# publishes only manylinux_2_27, numpy both, the others 2_28.
_PLATFORMS = [f"manylinux_2_{v}_aarch64" for v in range(36, 16, -1)] + ["manylinux2014_aarch64"]
# qemu's `max` model is excluded: its SME paths computed wrong int8 results in LiteRT.
_EXCLUDED_CPUS = {"max"}

NATIVE = Path(__file__).with_name("native")
HOST_TOOLS = {
    "qemu-aarch64": "qemu-user",
    "aarch64-linux-gnu-g++": "g++-aarch64-linux-gnu",
    "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu",
    "gcc": "gcc",
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg": "dpkg",
    "dpkg-query": "dpkg",
    "tar": "tar",
}
STEP_TIMEOUT_S = 900


@dataclass(frozen=True)
class Arm64Env:
    """A prepared environment. Paths only; nothing here starts a process."""

    root: Path

    @property
    def sysroot(self) -> Path:
        return self.root / "sysroot"

    @property
    def site(self) -> Path:
        return self.root / "site"

    @property
    def python(self) -> Path:
        return self.sysroot / "usr" / "bin" / "python3.11"

    @property
    def et_runner(self) -> Path:
        return self.root / "bin" / "et_runner"

    @property
    def plugin(self) -> Path:
        return self.root / "plugin" / "libinsn_count.so"

    @property
    def manifest(self) -> dict:
        return json.loads((self.root / "manifest.json").read_text())

    def cpu_models(self) -> list[str]:
        return sorted(p.name for p in (self.root / "cpu").iterdir() if (p / "proc" / "cpuinfo").is_file())

    def cpu_root(self, model: str) -> Path:
        """The `-L` root for one qemu CPU model: the shared sysroot plus that model's own
        /proc/cpuinfo."""
        root = self.root / "cpu" / model
        if not (root / "proc" / "cpuinfo").is_file():
            raise ToolchainError(
                f"qemu cpu model {model!r} is not prepared; prepared models: {', '.join(self.cpu_models())}",
                stage="emulate",
            )
        return root


# --------------------------------------------------------------------------- locating


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgepack"


def missing_host_tools() -> list[str]:
    """The host tools setup needs that are not on PATH, each with its Debian package."""
    return [f"{tool} (apt package {pkg})" for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None]


def qemu_version() -> str:
    exe = shutil.which("qemu-aarch64")
    if exe is None:
        raise ToolchainError("qemu-aarch64 is not installed (apt package qemu-user)", stage="emulate")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"version (\S+)", out)
    return match.group(1) if match else out.strip().splitlines()[0]


@functools.lru_cache(maxsize=1)
def resolved_debian_versions() -> tuple[tuple[str, str], ...]:
    """(name:arm64, version) of every package setup would unpack now: the dependency walk
    of DEBIAN_PACKAGES and the candidate version apt-get download fetches for each. Once
    per process (about 3 s of apt-cache)."""
    names = resolve_debian_packages()
    out = _run(["apt-cache", "policy", *names], "finding the arm64 package versions (apt-cache policy)")
    versions, current = {}, None
    for line in out.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = line[:-1]
        elif current and line.strip().startswith("Candidate:"):
            versions[current] = line.split(":", 1)[1].strip()
    missing = [n for n in names if versions.get(n) in (None, "(none)")]
    if missing:
        raise ToolchainError(f"arm64 setup: apt has no candidate version of {', '.join(missing)}; run `apt-get update`", stage="setup")
    return tuple(sorted((n, versions[n]) for n in names))


def env_key() -> str:
    """Everything that changes what the environment contains or how its binaries behave:
    the Debian packages by resolved version (a security update of libc6 is another
    sysroot), the wheels by their pinned versions, qemu, the native sources."""
    native = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(NATIVE.iterdir()) if p.suffix in {".c", ".cpp"}}
    doc = {
        "layout": LAYOUT,
        "packages": DEBIAN_PACKAGES,
        "debian_versions": resolved_debian_versions(),
        "wheels": wheels(),
        "python": PYTHON_TAG,
        "qemu": qemu_version(),
        "native": native,
        "nproc": os.cpu_count() or 1,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


def env_dir() -> Path:
    return cache_root() / f"arm64-{env_key()}"


def find_env() -> Arm64Env | None:
    """The prepared environment for this machine's qemu and these versions, if any."""
    if platform.system() != "Linux" or shutil.which("qemu-aarch64") is None:
        return None
    root = env_dir()
    return Arm64Env(root) if (root / "manifest.json").is_file() else None


def require_env() -> Arm64Env:
    env = find_env()
    if env is None:
        missing = missing_host_tools()
        hint = f"install {', '.join(missing)}, then " if missing else ""
        raise ToolchainError(
            f"the emulated aarch64 environment is not prepared: {hint}run `edgepack devices setup`",
            stage="emulate",
        )
    return env


# --------------------------------------------------------------------------- setup


def _run(cmd: list[str], what: str, *, cwd: Path | None = None, env: dict | None = None, timeout: int = STEP_TIMEOUT_S) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ToolchainError(f"arm64 setup: {what} did not finish within {timeout} s", stage="setup") from None
    except FileNotFoundError:
        raise ToolchainError(f"arm64 setup: {what} needs {cmd[0]}, which is not installed", stage="setup") from None
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.strip()]
        tail = " | ".join(lines[-3:]) or "no output"
        raise ToolchainError(f"arm64 setup: {what} failed (exit {proc.returncode}): {tail}", stage="setup")
    return proc.stdout


def resolve_debian_packages() -> list[str]:
    """The arm64 packages the guest Python and the C++ runtime need, by name:arm64."""
    out = _run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
         "--no-breaks", "--no-replaces", "--no-enhances", *[f"{p}:arm64" for p in DEBIAN_PACKAGES]],
        "resolving the arm64 packages (apt-cache depends)",
    )
    names = sorted({line.strip() for line in out.splitlines() if not line.startswith(" ") and line.strip().endswith(":arm64")})
    names = [n for n in names if n.split(":")[0] not in _SKIP_PACKAGES]
    if not any(n.startswith("python3.11:") for n in names):
        raise ToolchainError(
            "arm64 setup: apt knows no python3.11:arm64; enable the architecture with "
            "`dpkg --add-architecture arm64 && apt-get update` (as root)",
            stage="setup",
        )
    return names


def _source_list_for_src() -> str:
    """deb-src lines for the repositories this machine already uses for arm64 packages:
    qemu-plugin.h ships only in qemu's source package."""
    out = _run(["apt-get", "indextargets", "--format", "$(REPO_URI) $(RELEASE) $(COMPONENT)", "Created-By: Packages"],
               "listing apt repositories (apt-get indextargets)")
    repos = sorted({line.strip() for line in out.splitlines() if line.strip()})
    return "".join(f"deb-src {line}\n" for line in repos)


def fetch_qemu_plugin_header(dest: Path, work: Path) -> str:
    """Extracts include/qemu/qemu-plugin.h of the installed qemu's exact source version
    into dest; returns that version. Uses a private apt state, so the system's apt
    configuration is neither needed nor touched."""
    fields = _run(["dpkg-query", "-W", "-f", "${source:Package} ${source:Version}", "qemu-user"],
                  "finding the installed qemu-user version").split()
    source, version = fields[0], fields[1]
    apt = work / "apt"
    (apt / "lists" / "partial").mkdir(parents=True)
    (apt / "cache" / "archives" / "partial").mkdir(parents=True)
    (apt / "sources.list").write_text(_source_list_for_src())
    opts = ["-o", f"Dir::Etc::SourceList={apt / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/nonexistent",
            "-o", f"Dir::State::Lists={apt / 'lists'}", "-o", f"Dir::Cache={apt / 'cache'}"]
    if os.geteuid() == 0:
        opts += ["-o", "APT::Sandbox::User=root"]
    # One unreachable third-party repository must not stop us: the source is looked up next.
    subprocess.run(["apt-get", *opts, "update"], capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    download = work / "src"
    download.mkdir()
    _run(["apt-get", *opts, "source", "--download-only", f"{source}={version}"],
         f"downloading the {source} {version} source package (for qemu-plugin.h)", cwd=download)
    tarballs = sorted(download.glob("*.orig.tar.*"))
    if not tarballs:
        raise ToolchainError(f"arm64 setup: the {source} source package has no .orig tarball", stage="setup")
    _run(["tar", "-xf", str(tarballs[0]), "-C", str(download), "--wildcards", "*/include/qemu/qemu-plugin.h"],
         "extracting qemu-plugin.h")
    headers = list(download.glob("*/include/qemu/qemu-plugin.h"))
    if not headers:
        raise ToolchainError("arm64 setup: qemu-plugin.h is not in the qemu source tarball", stage="setup")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(headers[0], dest / "qemu-plugin.h")
    return version


def _pip_platform_args() -> list[str]:
    args = ["--only-binary=:all:", "--python-version", PYTHON_TAG[0], "--implementation", PYTHON_TAG[1]]
    for tag in _PLATFORMS:
        args += ["--platform", tag]
    return args


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _qemu_cpu_models() -> list[str]:
    # `-cpu help` exits 1 after printing the list, so its status says nothing.
    proc = subprocess.run(["qemu-aarch64", "-cpu", "help"], capture_output=True, text=True, timeout=30)
    models = [w for line in proc.stdout.splitlines()[1:] for w in line.split()]
    if not models:
        raise ToolchainError(f"arm64 setup: `qemu-aarch64 -cpu help` listed no cpu models: {proc.stderr.strip()}", stage="setup")
    return [m for m in models if m not in _EXCLUDED_CPUS]


class _Steps:
    """A rich progress display on stderr, or nothing when nobody watches."""

    def __init__(self, show: bool, total: int):
        self.progress = None
        if show:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True), transient=False)
            self.progress.start()
            self.overall = self.progress.add_task("arm64 environment", total=total)
        self.task = None

    def step(self, description: str, total: int | None = None) -> None:
        if self.progress is None:
            return
        if self.task is not None:
            self.progress.update(self.task, completed=self.progress.tasks[self.task].total or 1)
            self.progress.advance(self.overall)
        self.task = self.progress.add_task(f"  {description}", total=total or 1)

    def advance(self, n: int = 1) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task, n)

    def close(self) -> None:
        if self.progress is not None:
            if self.task is not None:
                self.progress.update(self.task, completed=self.progress.tasks[self.task].total or 1)
                self.progress.advance(self.overall)
            self.progress.stop()


def setup(*, force: bool = False, progress: bool = True) -> Arm64Env:
    """Prepare the environment once; return the existing one when it is already there.

    Raises ToolchainError naming the step that failed; nothing partial is left behind."""
    if platform.system() != "Linux" or platform.machine() not in {"x86_64", "amd64", "aarch64"}:
        raise ToolchainError(f"arm64 setup needs Linux with qemu-user; this is {platform.system()} {platform.machine()}", stage="setup")
    missing = missing_host_tools()
    if missing:
        raise ToolchainError(f"arm64 setup needs these host tools: {', '.join(missing)}", stage="setup")
    final = env_dir()
    if (final / "manifest.json").is_file() and not force:
        return Arm64Env(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    steps = _Steps(progress, total=8)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        manifest = _build(work, steps)
        manifest["setup_seconds"] = round(time.monotonic() - started, 1)
        manifest["size_bytes"] = _dir_size(work / "env")
        (work / "env" / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
        steps.close()
        if force and final.exists():
            shutil.rmtree(final)
        try:
            os.rename(work / "env", final)
        except OSError:
            if not (final / "manifest.json").is_file():  # a concurrent setup won the race otherwise
                raise
    except BaseException:
        steps.close()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Arm64Env(final)


def _build(work: Path, steps: _Steps) -> dict:
    env = work / "env"
    sysroot, site, et_dir = env / "sysroot", env / "site", env / "executorch"
    for d in (sysroot, site, et_dir, env / "bin", env / "plugin", env / "cpu"):
        d.mkdir(parents=True)

    steps.step("resolving arm64 Debian packages")
    packages = resolve_debian_packages()

    steps.step(f"downloading {len(packages)} arm64 Debian packages")
    debs = work / "debs"
    debs.mkdir()
    _run(["apt-get", "download", *packages], "downloading arm64 packages (apt-get download)", cwd=debs)
    files = sorted(debs.glob("*.deb"))
    if len(files) != len(packages):
        raise ToolchainError(f"arm64 setup: apt-get download gave {len(files)} files for {len(packages)} packages", stage="setup")

    steps.step("unpacking the arm64 sysroot", total=len(files))
    versions = {}
    for deb in files:
        _run(["dpkg", "-x", str(deb), str(sysroot)], f"unpacking {deb.name}")
        name, version = deb.name.split("_")[:2]
        versions[name] = version.replace("%3a", ":")
        steps.advance()
    if not (sysroot / "usr" / "bin" / "python3.11").is_file():
        raise ToolchainError("arm64 setup: the unpacked sysroot has no usr/bin/python3.11", stage="setup")
    # Debian compiles the standard library at install time (py3compile), which dpkg -x
    # skips; bytecode is the same on every ISA, so the host's 3.11 compiles it, sparing
    # every emulated run from recompiling it. Paths in it read as the guest sees them.
    _run([sys.executable, "-m", "compileall", "-q", "-j", "0", "-s", str(sysroot), "-p", "/",
          str(sysroot / "usr" / "lib" / "python3.11")], "compiling the guest standard library to bytecode")

    wanted = wheels()
    wheels_dir = work / "wheels"
    steps.step(f"downloading {len(wanted)} aarch64 wheels", total=len(wanted))
    for name, version in wanted.items():
        _run(_pip("download", "--no-deps", "--dest", str(wheels_dir), *_pip_platform_args(), f"{name}=={version}"),
             f"downloading the aarch64 wheel of {name}=={version} (pip download)")
        steps.advance()

    steps.step("installing the wheels for aarch64", total=2)
    runtime_wheels = [str(w) for w in sorted(wheels_dir.glob("*.whl")) if not w.name.startswith("executorch-")]
    _run(_pip("install", "--no-deps", "--no-index", "--target", str(site), *_pip_platform_args(), *runtime_wheels),
         "installing numpy, ai-edge-litert and onnxruntime (pip install --target)")
    steps.advance()
    # Only ExecuTorch's C++ runtime is used (its Python needs an aarch64 torch): keep the
    # shared libraries and headers, drop the ~115 MB rest.
    et_full = work / "executorch-wheel"
    et_wheels = [str(w) for w in wheels_dir.glob("executorch-*.whl")]
    _run(_pip("install", "--no-deps", "--no-index", "--no-compile", "--target", str(et_full), *_pip_platform_args(), *et_wheels),
         "unpacking the ExecuTorch aarch64 wheel")
    shutil.move(et_full / "executorch" / "lib", et_dir / "lib")
    shutil.move(et_full / "executorch" / "include", et_dir / "include")
    shutil.rmtree(et_dir / "lib" / "cmake", ignore_errors=True)
    steps.advance()

    steps.step("compiling the native helpers", total=3)
    _run(["aarch64-linux-gnu-gcc", "-O2", "-o", str(env / "bin" / "cpuinfo_probe"), str(NATIVE / "cpuinfo_probe.c")],
         "compiling cpuinfo_probe.c for aarch64")
    steps.advance()
    inc = et_dir / "include"
    _run(["aarch64-linux-gnu-g++", "-std=c++17", "-O2", "-w", "-DC10_USING_CUSTOM_GENERATED_MACROS",
          f'-DEDGEPACK_ET_VERSION="{wanted["executorch"]}"',
          f"-I{inc}", f"-I{inc / 'executorch/runtime/core/portable_type/c10'}",
          str(NATIVE / "et_runner.cpp"), "-o", str(env / "bin" / "et_runner"), f"-L{et_dir / 'lib'}",
          # Backends and kernels register themselves from static constructors; without
          # --no-as-needed the linker drops the libraries nothing names directly.
          "-Wl,--no-as-needed", "-lexecutorch_backend_xnnpack", "-lexecutorch_kernels_optimized",
          "-lexecutorch_kernels_quantized", "-lexecutorch_threadpool", "-lexecutorch", "-Wl,--as-needed",
          "-Wl,-rpath,$ORIGIN/../executorch/lib"],
         "cross-compiling et_runner.cpp against the ExecuTorch wheel")
    steps.advance()
    qemu_source = fetch_qemu_plugin_header(env / "plugin", work)
    _run(["gcc", "-O2", "-shared", "-fPIC", "-Wall", f"-I{env / 'plugin'}", str(NATIVE / "insn_count.c"),
          "-o", str(env / "plugin" / "libinsn_count.so")], "compiling the instruction-count TCG plugin")
    steps.advance()

    models = _qemu_cpu_models()
    steps.step("describing each qemu cpu model (/proc/cpuinfo)", total=len(models))
    nproc = os.cpu_count() or 1
    top = sorted(p.name for p in sysroot.iterdir())
    for model in models:
        root = env / "cpu" / model
        (root / "proc").mkdir(parents=True)
        for name in top:  # relative links, so renaming the whole folder keeps them valid
            (root / name).symlink_to(Path("..", "..", "sysroot", name))
        text = _run(["qemu-aarch64", "-cpu", model, "-L", str(sysroot), str(env / "bin" / "cpuinfo_probe"), str(nproc)],
                    f"probing qemu cpu model {model}")
        (root / "proc" / "cpuinfo").write_text(text)
        steps.advance()

    steps.step("checking the runtimes import under emulation")
    _smoke_test(env, models)
    return {
        "schema": "edgepack.arm64-env/1",
        "qemu": qemu_version(),
        "qemu_source_for_plugin_header": qemu_source,
        "debian_packages": versions,
        "wheels": wanted,
        "cpu_models": models,
        "nproc_in_cpuinfo": nproc,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _smoke_test(env: Path, models: list[str]) -> None:
    """Imports each runtime once under emulation, so a broken environment fails setup
    rather than the first build that uses it."""
    model = "cortex-a72" if "cortex-a72" in models else models[0]
    root = env / "cpu" / model
    code = "import numpy, onnxruntime, ai_edge_litert.interpreter; print(numpy.__version__, onnxruntime.__version__)"
    _run(["qemu-aarch64", "-cpu", model, "-L", str(root), "-E", f"PYTHONPATH={env / 'site'}", "-E", "PYTHONDONTWRITEBYTECODE=1",
          str(root / "usr" / "bin" / "python3.11"), "-c", code],
         f"importing numpy, onnxruntime and ai-edge-litert under qemu ({model})", timeout=300)


def _pip(*args: str) -> list[str]:
    """pip of the running interpreter: it only downloads foreign wheels and unpacks them
    into the cache (--target); it never installs into the interpreter's own environment."""
    return [sys.executable, "-m", "pip", *args]
