"""`edgepack verify`: check a release archive's signature, hashes and contents."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgepack.cli.output import print_json, stdout


def verify(
    archive: Path = typer.Argument(..., help="Release archive (.tar.gz) written by `edgepack package`."),
    public_key: Optional[Path] = typer.Option(None, "--public-key", help="Ed25519 public key (.pub); the release must then carry a valid signature. Without it, who made the release is not checked."),
    require_signature: bool = typer.Option(False, "--require-signature", help="Fail unless the release's signature is checked and valid: needs --public-key (exit 2 without it); an unsigned release then fails with exit 1."),
    run: bool = typer.Option(False, "--run", help="Also re-run every artifact on the bundled test inputs and compare with the recorded outputs."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON document."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Tracebacks on errors."),
) -> int:
    """Verify a release: safe to unpack, signature, every file's sha256, nothing unlisted; with --run, outputs too. Exit 1 when it fails."""
    from edgepack import api

    result = api.verify(archive, public_key=public_key, run=run, require_signature=require_signature)
    if json_out:
        print_json(result.as_dict())
    else:
        stdout.print(f"{result.archive.name}: {result.project} {result.version} for {result.target}", highlight=False)
        for c in result.checks:
            stdout.print(f"  [green]ok[/]  {c.name}: {c.detail}", highlight=False)
        for r in result.runs:
            stdout.print(f"  [green]ok[/]  run {r.file}: max |difference| {r.max_abs_diff:.3g} <= {r.atol:.3g} ({r.runtime})", highlight=False)
        if result.authenticated:
            stdout.print(f"verified; signature: {result.signature}", highlight=False)
        else:
            stdout.print(f"[bold yellow]verified integrity only; authenticity {result.authenticity}[/]", highlight=False)
    raise typer.Exit(result.exit_code)
