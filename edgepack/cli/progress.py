"""Progress of long work: a spinner with the current step on a terminal; elsewhere (CI
logs, pipes) one plain line per step with the elapsed time, so a ten-minute build is
never silent until its end."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

from edgepack.cli.output import stderr


@contextmanager
def progress(label: str) -> Iterator[Callable[[str], None]]:
    if stderr.is_terminal:
        with stderr.status(label) as status:
            yield status.update
        return
    started = time.perf_counter()

    def say(message: str) -> None:
        stderr.print(f"[{time.perf_counter() - started:7.1f} s] {message}", highlight=False, markup=False)

    yield say
