"""`python -m edgepack.matrix.worker RESULT_FILE`: run the step given as JSON on stdin
({"kind": ..., "doc": ...}) in this fresh process and write what came of it to
RESULT_FILE, atomically: {"ok": true, "result": {...}} or {"ok": false, "error": "...",
"deterministic": bool}. Converters print on stdout and stderr; the file carries the result."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def outcome(kind: str, doc: dict) -> dict:
    """Run the step and describe the outcome. An EdgepackError (bad input, a toolchain's
    refusal, a failed budget) would fail the same way again: it is not retried."""
    from edgepack.errors import EdgepackError
    from edgepack.matrix.steps import run_step

    try:
        return {"ok": True, "result": run_step(kind, doc)}
    except EdgepackError as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}", "deterministic": True}
    except Exception as e:  # noqa: BLE001 - anything else may pass on another attempt
        first = (str(e).strip().splitlines() or [""])[0][:300]
        return {"ok": False, "error": f"{type(e).__name__}: {first}", "deterministic": False}


def main() -> int:
    request = json.loads(sys.stdin.read())
    result = outcome(request["kind"], request["doc"])
    path = Path(sys.argv[1])
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
