"""The `edgepack` command. Each command lives in its own module and only builds a request
for `edgepack.api`; this module assembles them and maps errors to exit codes."""

from __future__ import annotations

import sys

import typer

from edgepack import __version__
from edgepack.cli import build as build_cmd
from edgepack.cli import devices as devices_cmd
from edgepack.cli import profile as profile_cmd
from edgepack.cli import diff as diff_cmd
from edgepack.cli import keygen as keygen_cmd
from edgepack.cli import matrix as matrix_cmd
from edgepack.cli import package as package_cmd
from edgepack.cli import targets as targets_cmd
from edgepack.cli import verify as verify_cmd
from edgepack.cli.output import run_guarded

app = typer.Typer(
    name="edgepack",
    help="Compress a trained model, emit LiteRT, ExecuTorch and ONNX artifacts for a target, verify and profile them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"edgepack {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    pass


app.command("build")(build_cmd.build)
app.command("matrix")(matrix_cmd.matrix)
app.add_typer(targets_cmd.app, name="targets")
app.command("profile")(profile_cmd.profile)
app.add_typer(devices_cmd.app, name="devices")
app.command("package")(package_cmd.package)
app.command("verify")(verify_cmd.verify)
app.command("keygen")(keygen_cmd.keygen)
app.command("diff")(diff_cmd.diff)


def main() -> None:
    sys.exit(run_guarded(app))
