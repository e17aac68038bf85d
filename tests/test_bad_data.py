"""Data hooks returning bad data: the real command exits 2 with one line naming the hook
and what is wrong, before any export (no dist, no temporary folder of the build)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import PROGRESS_LINE, Run, assert_one_line_error

# Hooks appended to the tiny project's data.py; each spoils one thing of a good split.
BAD_HOOKS = '''

def validation():
    return evaluation()


def nan_everywhere():
    x, y = evaluation()
    return np.full_like(x, np.nan), y


def one_inf():
    x, y = calibration()
    x[7, 0, 1, 2] = np.inf
    return x, y


def beyond_float32():
    x, y = calibration()
    return x.astype(np.float64) * 1e300, y


def label_too_large():
    x, y = evaluation()
    y[4] = 1000
    return x, y


def label_negative():
    x, y = evaluation()
    y[0] = -1
    return x, y


def label_equal_to_class_count():
    x, y = evaluation()
    y[2] = 3
    return x, y


def fewer_labels():
    x, y = evaluation()
    return x, y[:-1]


def ragged_inputs():
    x, y = evaluation()
    return [x[0], x[1, :, :3]], y[:2]


def object_inputs():
    x, y = evaluation()
    return np.array([x[0], "image"], dtype=object), y[:2]


def string_inputs():
    return np.full((2, 1, 4, 4), "a"), np.zeros(2, np.int64)


def uint8_images():
    x, y = evaluation()
    return (x.clip(0, 1) * 255).astype(np.uint8), y


def bool_inputs():
    x, y = evaluation()
    return x > 0.5, y


def float_labels():
    x, y = evaluation()
    return x, y.astype(np.float32)


def bool_labels():
    x, y = evaluation()
    return x, y > 0


def list_instead_of_tuple():
    return list(evaluation())


def float64_lists():
    x, y = evaluation()
    return x.astype(np.float64).tolist(), y.tolist()
'''


def _with_hook(project, split: str, hook: str):
    (project.root / "data.py").write_text((project.root / "data.py").read_text() + BAD_HOOKS)
    text = (project.root / "edgepack.toml").read_text().replace("[data]", '[data]\nvalidation = "data.py:validation"')
    project.write_toml(text.replace(f'{split} = "data.py:{split}"', f'{split} = "data.py:{hook}"'))


def _build(project, tmp_path, *extra: str):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    proc = subprocess.run([sys.executable, "-m", "edgepack", "build", "-p", str(project.root), *extra], capture_output=True,
                          text=True, env={**os.environ, "COLUMNS": "200", "TMPDIR": str(tmpdir)}, timeout=600)
    return Run(proc.returncode, proc.stdout, proc.stderr), tmpdir


CASES = [
    ("evaluation", "nan_everywhere", ["data.evaluation hook 'data.py:nan_everywhere'", "1440 non-finite", "90 of 90 samples", "first at sample 0"]),
    ("calibration", "one_inf", ["data.calibration hook", "1 non-finite", "first at sample 7"]),
    ("calibration", "beyond_float32", ["data.calibration hook", "non-finite", "beyond float32's range"]),
    ("training", "one_inf", ["data.training hook", "first at sample 7"]),
    ("evaluation", "label_too_large", ["data.evaluation hook", "1 label(s) outside 0 to 2", "3 classes", "sample 4: 1000"]),
    ("evaluation", "label_negative", ["data.evaluation hook", "outside 0 to 2", "sample 0: -1"]),
    ("calibration", "label_equal_to_class_count", ["data.calibration hook", "outside 0 to 2", "sample 2: 3"]),
    ("validation", "label_too_large", ["data.validation hook", "outside 0 to 2", "sample 4: 1000"]),
    ("training", "label_too_large", ["data.training hook", "outside 0 to 2", "sample 4: 1000"]),
    ("evaluation", "fewer_labels", ["data.evaluation hook", "89 labels for 90 inputs"]),
    ("evaluation", "ragged_inputs", ["data.evaluation hook", "inputs are ragged"]),
    ("evaluation", "object_inputs", ["data.evaluation hook", "object array"]),
    ("evaluation", "string_inputs", ["data.evaluation hook", "inputs are <U1", "float32"]),
    ("calibration", "uint8_images", ["data.calibration hook", "inputs are uint8", "x.astype(np.float32) / 255"]),
    ("evaluation", "bool_inputs", ["data.evaluation hook", "inputs are bool", "float32"]),
    ("evaluation", "float_labels", ["data.evaluation hook", "labels are float32", "integer class indices"]),
    ("evaluation", "bool_labels", ["data.evaluation hook", "labels are bool", "integer class indices"]),
    ("evaluation", "list_instead_of_tuple", ["data.evaluation hook", "returned list", "tuple (inputs, labels)"]),
]


@pytest.mark.parametrize("split, hook, fragments", CASES, ids=[f"{s}-{h}" for s, h, _ in CASES])
def test_load_split_bad_data_exits_2_before_any_export(tiny_project, tmp_path, split, hook, fragments):
    _with_hook(tiny_project, split, hook)
    # The training and validation splits are read only by a recipe with stages, before the first stage runs.
    run, tmpdir = _build(tiny_project, tmp_path, *(["-r", "prune-distill-int8"] if split in ("training", "validation") else []))
    assert_one_line_error(run, 2, *fragments)
    assert len([ln for ln in run.stderr.splitlines() if ln.strip() and not PROGRESS_LINE.match(ln)]) == 1, run.stderr
    assert not (tiny_project.root / "dist").exists()
    assert not list(tmpdir.glob("edgepack-*")), "the build started exporting"


@pytest.mark.slow
def test_load_split_float64_lists_are_accepted_as_float32(tiny_project, tmp_path):
    """Plain nested lists of finite floats and int labels are good data: the build passes."""
    _with_hook(tiny_project, "evaluation", "float64_lists")
    run, _ = _build(tiny_project, tmp_path)
    assert run.code == 0, run.stderr
    assert (tiny_project.root / "dist" / "onnx-only" / "manifest.json").is_file()


def test_load_split_checks_labels_against_class_count_when_given(tiny_project):
    from edgepack.config.loader import load_project
    from edgepack.errors import ConfigError
    from edgepack.sources.data import load_split

    project = load_project(tiny_project.root)
    assert len(load_split(tiny_project.root, project, "evaluation", classes=3)) == 90
    with pytest.raises(ConfigError, match="outside 0 to 1 \\(the model outputs 2 classes\\), first at sample 2: 2"):
        load_split(tiny_project.root, project, "evaluation", classes=2)
