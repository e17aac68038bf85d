"""`edgepack package`: a finished build -> one reproducible, optionally signed archive."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgepack.cli.output import print_json, stdout


def package(
    target: str = typer.Option(..., "--target", "-t", help="Target whose build to package (dist/<target>/)."),
    project: Path = typer.Option(Path("."), "--project", "-p", help="Project folder holding edgepack.toml."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="The build's output folder (default: the project's build.output_dir, 'dist'); the archive is written there."),
    archive: Optional[Path] = typer.Option(None, "--archive", help="Write the archive to this path instead."),
    sign_key: Optional[Path] = typer.Option(None, "--sign-key", help="Ed25519 private key (from `edgepack keygen`) to sign the release with."),
    against: Optional[Path] = typer.Option(None, "--against", help="Previous release (archive, dist folder or manifest.json) to diff against; exit 1 on a regression."),
    max_accuracy_drop_pt: float = typer.Option(0.5, help="With --against: accuracy points an artifact may lose."),
    max_size_increase_pct: float = typer.Option(5.0, help="With --against: percent an artifact may grow."),
    max_latency_increase_pct: float = typer.Option(25.0, help="With --against: percent host latency may grow (same machine only)."),
    reproducible: bool = typer.Option(False, "--reproducible", help="Leave out the clock-measured figures (host latency, memory, durations): two builds of the same inputs then package to identical bytes."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON document."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Tracebacks on errors."),
) -> int:
    """Package dist/<target>/ into edgepack-<project>-<target>-<version>.tar.gz: artifacts, manifest, model card, report, test vectors, signature."""
    from edgepack import api

    result = api.package(
        api.dist_folder(project, target, output), archive=archive, sign_key=sign_key, against=against, reproducible=reproducible,
        thresholds=api.Thresholds(max_accuracy_drop_pt=max_accuracy_drop_pt, max_size_increase_pct=max_size_increase_pct,
                                  max_latency_increase_pct=max_latency_increase_pct),
    )
    if json_out:
        print_json(result.as_dict())
    else:
        from edgepack.cli.tables import human_bytes

        stdout.print(f"wrote {result.archive} ({human_bytes(result.size_bytes)}, {len(result.files) + 1 + result.signed} files)", highlight=False)
        stdout.print(f"sha256 {result.sha256}", highlight=False)
        stdout.print("signed with key sha256 " + result.key_fingerprint if result.signed else "not signed (pass --sign-key to sign)", highlight=False)
        if result.diff is not None:
            from edgepack.cli.diff import print_diff

            print_diff(result.diff)
    raise typer.Exit(result.exit_code)
