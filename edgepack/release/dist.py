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
    # Sorted keys and a trailing newline: the same content always gives the same bytes.
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


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
