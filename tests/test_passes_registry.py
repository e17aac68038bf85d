from __future__ import annotations

import subprocess
import sys

import pytest

from edgepack.errors import ConfigError
from edgepack.passes import PASSES, build_registry, get_pass
from edgepack.passes.prune import Prune


def test_passes_registry_names_every_pass_once():
    assert sorted(PASSES) == ["cluster", "distill", "prune", "reorganize"]
    assert all(cls.name == name for name, cls in PASSES.items())
    with pytest.raises(TypeError):
        PASSES["x"] = Prune


def test_passes_registering_a_name_twice_raises():
    with pytest.raises(ValueError, match="pass name 'prune' registered twice"):
        build_registry(Prune, Prune)


def test_passes_unknown_name_lists_valid_passes():
    with pytest.raises(ConfigError, match="unknown pass 'quantise'; valid passes: cluster, distill, prune, reorganize"):
        get_pass("quantise")


def test_passes_import_loads_neither_torch_nor_numpy():
    code = ("import sys, edgepack.passes as p; p.PASSES['prune'].Config(method='structured', ratio=0.5); "
            "print(sorted(m for m in ('torch', 'numpy', 'sklearn', 'torch_pruning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
