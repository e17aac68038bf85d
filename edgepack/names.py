"""Names that become paths. A target's name is its dist folder (`dist/<target>/`), and a
project's name and version with the target's name make the release folder and archive
`edgepack-<project>-<target>-<version>[.tar.gz]`. Each is checked wherever it is read
(edgepack.toml, targets/*.toml, manifest.json, --target) against one pattern here, so
none can hold a '/', a '..', a leading '.' or '-', or anything a shell or tar reads
specially.

64 characters each keep the archive's file name (three of them plus 20) under the
255-byte limit of common file systems.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, StrictStr, WithJsonSchema

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# A version also takes '+' (PEP 440 local versions and semver build metadata: 1.0.0+build.5).
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"

NAME_RULE = "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit (e.g. digits, android-arm64)"
VERSION_RULE = ("1 to 64 letters, digits, '.', '_', '+' or '-', starting with a letter or digit "
                "(e.g. 1.0.0, 2.1.0rc1, 1.0.0+build.5)")


def check_name(value: str) -> str:
    if not re.fullmatch(NAME_PATTERN, value):
        raise ValueError(f"{value!r} is not a valid name: use {NAME_RULE}")
    return value


def check_version(value: str) -> str:
    if not re.fullmatch(VERSION_PATTERN, value):
        raise ValueError(f"{value!r} is not a valid version: use {VERSION_RULE}")
    return value


def release_root(project: str, target: str, version: str) -> str:
    """The release's top folder, and its archive's name without `.tar.gz`."""
    return f"edgepack-{project}-{target}-{version}"


def _typed(base, check, pattern: str):
    # The check gives the error a reader can act on; the schema still states the pattern.
    return Annotated[base, AfterValidator(check), WithJsonSchema({"type": "string", "pattern": pattern})]


# In the user's TOML files.
Name = _typed(str, check_name, NAME_PATTERN)
Version = _typed(str, check_version, VERSION_PATTERN)
# In manifest.json, whose fields take JSON strings only.
StrictName = _typed(StrictStr, check_name, NAME_PATTERN)
StrictVersion = _typed(StrictStr, check_version, VERSION_PATTERN)
