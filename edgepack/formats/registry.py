"""The formats edgepack builds, by name.

The built-in formats are registered here, explicitly; importing a format's module
registers nothing. A project or a test adds its own with `FORMATS.register(fmt)` (or, for
a while, `with FORMATS.registered(fmt):`); a name or extension registered twice raises.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from edgepack.errors import ConfigError
from edgepack.formats import executorch, onnx, tflite
from edgepack.formats.base import Format


class Registry:
    def __init__(self, *formats: Format):
        self._formats: dict[str, Format] = {}
        for f in formats:
            self.register(f)

    def register(self, fmt: Format) -> Format:
        if fmt.name in self._formats:
            raise ValueError(f"format {fmt.name!r} is registered twice")
        clash = next((f.name for f in self._formats.values() if f.extension == fmt.extension), None)
        if clash:
            raise ValueError(f"format {fmt.name!r}: extension {fmt.extension} is already format {clash!r}'s")
        self._formats[fmt.name] = fmt
        return fmt

    def unregister(self, name: str) -> None:
        self.get(name)
        del self._formats[name]

    @contextmanager
    def registered(self, fmt: Format) -> Iterator[Format]:
        """`fmt` is known inside the block and forgotten after it."""
        self.register(fmt)
        try:
            yield fmt
        finally:
            self._formats.pop(fmt.name, None)

    def get(self, name: str) -> Format:
        try:
            return self._formats[name]
        except (KeyError, TypeError):
            raise ConfigError(f"unknown format {name!r}; valid formats: {', '.join(self.names())}") from None

    def find(self, name: str) -> Format | None:
        """The format, or None for a name no registered format has (an old manifest's)."""
        return self._formats.get(name)

    def by_extension(self, extension: str) -> Format | None:
        return next((f for f in self._formats.values() if f.extension == extension), None)

    def names(self) -> tuple[str, ...]:
        return tuple(self._formats)

    def extensions(self) -> dict[str, str]:
        return {f.name: f.extension for f in self._formats.values()}

    def __iter__(self) -> Iterator[Format]:
        return iter(tuple(self._formats.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._formats


FORMATS = Registry(tflite.FORMAT, executorch.FORMAT, onnx.FORMAT)
