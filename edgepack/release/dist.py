"""Writing a target's output folder so that readers never see half of it.

The new content is assembled in a hidden sibling folder and swapped in by rename at the
end; a failed or interrupted build leaves the previous folder untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from edgepack.interrupts import check_interrupted, deferred


def write_json(path: Path, doc: dict) -> None:
    """Write `doc` to `path` atomically: a reader sees the old file or the whole new one.
    The temporary file is created new (O_EXCL), so a link planted in the folder is never
    written through, and the rename replaces a link at `path` itself, not its target."""
    # Sorted keys and a trailing newline: the same content always gives the same bytes.
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def staged_folder(final: Path) -> Iterator[Path]:
    """Yield an empty staging folder; on normal exit it replaces `final`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield staging
        # An interrupt a toolchain swallowed earlier still stops the swap.
        check_interrupted()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    # A signal between the two renames would leave no folder at `final`: hold it until
    # the swap is done (it is raised right after).
    with deferred():
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.rmdir(old)
            os.rename(final, old)
        os.rename(staging, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        os.chmod(final, 0o755)
