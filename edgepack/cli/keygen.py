"""`edgepack keygen`: an Ed25519 key pair for signing releases."""

from __future__ import annotations

from pathlib import Path

import typer

from edgepack.cli.output import print_json, stdout

KEYGEN_SCHEMA = "edgepack.keygen/1"


def keygen(
    name: Path = typer.Argument(..., help="Path stem: writes NAME.key (private, mode 0600) and NAME.pub."),
    force: bool = typer.Option(False, "--force", help="Replace existing key files."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON document."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Tracebacks on errors."),
) -> None:
    """Create an Ed25519 key pair: sign with `package --sign-key NAME.key`, check with `verify --public-key NAME.pub`."""
    from edgepack import api

    pair = api.keygen(name, force=force)
    if json_out:
        print_json({"schema": KEYGEN_SCHEMA, "private_key": str(pair.private_key), "public_key": str(pair.public_key),
                    "algorithm": "ed25519", "fingerprint": pair.fingerprint})
        return
    stdout.print(f"wrote {pair.private_key} (keep it secret) and {pair.public_key}", highlight=False)
    stdout.print(f"key sha256 {pair.fingerprint}", highlight=False)
