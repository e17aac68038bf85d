import subprocess
import sys

from conftest import cli

HEAVY = ("torch", "tensorflow", "executorch", "onnxruntime", "litert_torch", "ai_edge_litert", "onnx", "torchao")


def _modules_after(argv: list[str]) -> set[str]:
    """Run the CLI in a fresh interpreter and list the heavy modules it imported."""
    code = (
        "import sys\n"
        f"sys.argv = ['edgepack', *{argv!r}]\n"
        "from edgepack.cli.output import run_guarded\n"
        "from edgepack.cli import app\n"
        "run_guarded(app)\n"
        "print('@@MODULES@@')\n"
        f"print('\\n'.join(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {m for m in out.split("@@MODULES@@", 1)[1].split() if m}


def test_cli_help_imports_no_toolchain():
    assert _modules_after(["--help"]) == set()


def test_cli_version_imports_no_toolchain():
    assert _modules_after(["--version"]) == set()


def test_cli_targets_listing_imports_no_toolchain():
    assert _modules_after(["targets"]) == set()


def test_cli_version_prints_package_version():
    import edgepack

    run = cli("--version")
    assert run.code == 0
    assert run.stdout.strip() == f"edgepack {edgepack.__version__}"


def test_cli_unknown_command_is_a_usage_error():
    run = cli("frobnicate")
    assert run.code == 2
    assert "Traceback" not in run.stderr
