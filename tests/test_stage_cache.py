"""The stage cache: a stage is reused only when everything it depends on is unchanged
(the factory's code, the files its config names, the seed), and an unreadable entry is
recomputed with a note on the stage row, never silently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from passes_support import digits

from edgepack.compress import cachekey
from edgepack.compress.engine import run_stages
from edgepack.compress.quantize_stage import DEFAULT
from edgepack.compress.recipe import ResolvedRecipe, parse_stages
from edgepack.passes.base import Dataset, PassContext
from edgepack.sources.pytorch import build_untrained, load_factory_model

MODEL_PY = """
from torch import nn


def build():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, {width}), nn.BatchNorm1d({width}), nn.ReLU(), nn.Linear({width}, 10))
"""


def _project(root: Path) -> Path:
    from safetensors.torch import save_file

    root.mkdir()
    (root / "model.py").write_text(MODEL_PY.format(width=16))
    (root / "teacher.py").write_text(MODEL_PY.format(width=24))
    torch.manual_seed(1)
    teacher = build_untrained(root, "teacher.py:build", what="teacher")
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(root / "teacher.safetensors"))
    return root


def _run(root: Path, stages: tuple[dict, ...], *, seed: int = 0):
    specs, _, problems = parse_stages(stages, where=root / "edgepack.toml", prefix="compress.stages")
    assert not problems
    recipe = ResolvedRecipe(name="inline", source="test", stages=tuple(specs), quantize=DEFAULT, max_total_drop_pt=100.0)
    tr, va = digits()
    small = Dataset(tr.x[:256], tr.y[:256])

    def load_model(ref, weights):
        return load_factory_model(root, ref, (root / weights).resolve(), what=ref)

    torch.manual_seed(0)
    model = build_untrained(root, "model.py:build", what="model.factory").eval()
    ctx = PassContext(training=small, validation=va, load_model=load_model, example=np.zeros((1, 1, 8, 8), np.float32),
                      seed=seed, threads=1)
    out = run_stages(recipe, model=model, source_key="weights-sha", project_dir=root, factory="model.py:build",
                     build_fresh=lambda base: build_untrained(root, "model.py:build" if base == "original" else base, what=base),
                     ctx=ctx, evaluate_on=va, evaluated_on="validation", cache_dir=root / ".edgepack-cache" / "stages")
    return [r.as_dict() for r in out.rows[1:]]


REORGANIZE = ({"pass": "reorganize"},)
DISTILL = ({"pass": "distill", "epochs": 1, "teachers": [{"model": "teacher.py:build", "weights": "teacher.safetensors"}]},)


def test_stage_cache_hits_when_nothing_changed(tmp_path):
    root = _project(tmp_path / "p")
    assert [r["cache"] for r in _run(root, REORGANIZE)] == ["miss"]
    again = _run(root, REORGANIZE)
    assert [r["cache"] for r in again] == ["hit"] and again[0]["notes"] == []


def test_stage_cache_misses_when_the_factory_source_changes(tmp_path):
    root = _project(tmp_path / "p")
    _run(root, REORGANIZE)
    (root / "model.py").write_text(MODEL_PY.format(width=16) + "\n# the architecture was edited\n")
    assert [r["cache"] for r in _run(root, REORGANIZE)] == ["miss"]
    # a helper module beside the factory is its code too (siblings are importable)
    (root / "layers.py").write_text("WIDTH = 16\n")
    assert [r["cache"] for r in _run(root, REORGANIZE)] == ["miss"]
    assert [r["cache"] for r in _run(root, REORGANIZE)] == ["hit"]


def test_stage_cache_misses_when_the_seed_changes(tmp_path):
    root = _project(tmp_path / "p")
    _run(root, REORGANIZE, seed=0)
    assert [r["cache"] for r in _run(root, REORGANIZE, seed=1)] == ["miss"]
    assert [r["cache"] for r in _run(root, REORGANIZE, seed=0)] == ["hit"]


def test_stage_cache_misses_when_a_teachers_weights_change(tmp_path):
    from safetensors.torch import load_file, save_file

    root = _project(tmp_path / "p")
    first = _run(root, DISTILL)
    assert [r["cache"] for r in first] == ["miss"]
    assert [r["cache"] for r in _run(root, DISTILL)] == ["hit"]
    state = load_file(str(root / "teacher.safetensors"))
    state["1.weight"] = state["1.weight"] * 2  # same file name, same shapes, other content
    save_file(state, str(root / "teacher.safetensors"))
    second = _run(root, DISTILL)
    assert [r["cache"] for r in second] == ["miss"]
    assert second[0]["report"]["teachers"][0]["validation_accuracy"] != first[0]["report"]["teachers"][0]["validation_accuracy"]


def test_stage_cache_notes_an_unreadable_entry_and_runs_the_stage_again(tmp_path):
    root = _project(tmp_path / "p")
    _run(root, REORGANIZE)
    [entry] = (root / ".edgepack-cache" / "stages").iterdir()
    (entry / "state.safetensors").write_bytes(b"not a safetensors file")
    rows = _run(root, REORGANIZE)
    assert rows[0]["cache"] == "miss"
    assert len(rows[0]["notes"]) == 1 and f"cache entry {entry.name} was unreadable" in rows[0]["notes"][0]
    assert [r["cache"] for r in _run(root, REORGANIZE)] == ["hit"]  # the entry was replaced


def test_code_digest_skips_hidden_and_virtualenv_folders(tmp_path):
    root = tmp_path / "p"
    (root / "nets").mkdir(parents=True)
    (root / "model.py").write_text("x = 1\n")
    (root / "nets" / "block.py").write_text("y = 2\n")
    (root / ".edgepack-cache").mkdir()
    (root / ".edgepack-cache" / "stale.py").write_text("")
    (root / "venv").mkdir()
    (root / "venv" / "pyvenv.cfg").write_text("")
    (root / "venv" / "lib.py").write_text("")
    assert sorted(cachekey.code_digest(root, "model.py:build")) == ["model.py", "nets/block.py"]


@pytest.mark.parametrize("tool", ["torch", "torch-pruning", "scikit-learn"])
def test_tool_versions_name_the_libraries_a_stage_runs(tool):
    assert cachekey.tool_versions()[tool]
