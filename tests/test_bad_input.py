"""Every kind of bad input gives one line naming the problem, exit 2, no traceback, and
no output folder."""

import pickle

import pytest

from conftest import assert_one_line_error, cli


def _build(project, *extra):
    return cli("build", "-p", project.root, *extra)


def _no_dist(project):
    assert not (project.root / "dist").exists()


def test_build_without_project_file(tmp_path):
    run = cli("build", "-p", tmp_path)
    assert_one_line_error(run, 2, "edgepack.toml", "samples/digits")


def test_build_with_malformed_toml(tiny_project):
    (tiny_project.root / "edgepack.toml").write_text("[project\nname = 'x'\n")
    assert_one_line_error(_build(tiny_project), 2, "edgepack.toml", "not valid TOML")
    _no_dist(tiny_project)


def test_build_with_unknown_key(tiny_project):
    text = (tiny_project.root / "edgepack.toml").read_text().replace("[model]", "[model]\nwieghts = 'w'")
    tiny_project.write_toml(text)
    assert_one_line_error(_build(tiny_project), 2, "model.wieghts: unknown key")
    _no_dist(tiny_project)


def test_build_with_unknown_target(tiny_project):
    assert_one_line_error(_build(tiny_project, "-t", "iphone"), 2, "unknown target 'iphone'", "valid:", "android")
    _no_dist(tiny_project)


def test_factory_that_raises(tiny_project):
    tiny_project.write_toml((tiny_project.root / "edgepack.toml").read_text().replace("model.py:build", "model.py:raises"))
    assert_one_line_error(_build(tiny_project), 2, "model.factory", "factory exploded")
    _no_dist(tiny_project)


def test_factory_returning_the_wrong_type(tiny_project):
    tiny_project.write_toml((tiny_project.root / "edgepack.toml").read_text().replace("model.py:build", "model.py:not_a_module"))
    assert_one_line_error(_build(tiny_project), 2, "returned dict", "torch.nn.Module")
    _no_dist(tiny_project)


def test_factory_naming_a_missing_function(tiny_project):
    tiny_project.write_toml((tiny_project.root / "edgepack.toml").read_text().replace("model.py:build", "model.py:buld"))
    assert_one_line_error(_build(tiny_project), 2, "no function 'buld'", "build")


def test_weights_that_do_not_match_the_model(tiny_project):
    import torch
    from safetensors.torch import save_file

    save_file({"conv.weight": torch.zeros(4, 1, 3, 3), "extra": torch.zeros(2)}, str(tiny_project.root / "weights.safetensors"))
    assert_one_line_error(_build(tiny_project), 2, "do not match", "missing", "unexpected tensor", "shape mismatch: conv.weight [4, 1, 3, 3]")
    _no_dist(tiny_project)


def test_pickle_given_where_safetensors_is_expected(tiny_project, tmp_path):
    marker = tmp_path / "pwned"
    # A pickle that would create a file if anything unpickled it.
    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tiny_project.root / "weights.safetensors").write_bytes(pickle.dumps(Evil(), protocol=4))
    assert_one_line_error(_build(tiny_project), 2, "pickle", "never unpickles", "safetensors")
    assert not marker.exists()
    _no_dist(tiny_project)


def test_torch_save_zip_given_where_safetensors_is_expected(tiny_project):
    import torch

    torch.save({"conv.weight": torch.zeros(1)}, str(tiny_project.root / "weights.safetensors"))
    assert_one_line_error(_build(tiny_project), 2, "torch.save", "safetensors")


def test_input_shape_that_the_model_cannot_take(tiny_project):
    tiny_project.write_toml((tiny_project.root / "edgepack.toml").read_text().replace("[1, 1, 4, 4]", "[1, 3, 4, 4]"))
    assert_one_line_error(_build(tiny_project), 2, "model.input_shape [1, 3, 4, 4]")
    _no_dist(tiny_project)


def test_empty_calibration_data(tiny_project):
    tiny_project.write_toml((tiny_project.root / "edgepack.toml").read_text().replace("data.py:calibration", "data.py:empty"))
    assert_one_line_error(_build(tiny_project), 2, "data.calibration", "no samples")
    _no_dist(tiny_project)


def test_data_of_the_wrong_shape(tiny_project):
    tiny_project.write_toml((tiny_project.root / "edgepack.toml").read_text().replace("data.py:evaluation", "data.py:wrong_shape"))
    assert_one_line_error(_build(tiny_project), 2, "data.evaluation", "[8, 1, 5, 5]", "[N, 1, 4, 4]")
    _no_dist(tiny_project)


def test_missing_weights_file_and_missing_data_file_are_reported_together(tiny_project):
    (tiny_project.root / "weights.safetensors").unlink()
    (tiny_project.root / "data.py").unlink()
    run = _build(tiny_project)
    assert run.code == 2 and "Traceback" not in run.stderr
    assert "problems in the build plan" in run.stderr
    assert "model.weights" in run.stderr and "data.calibration" in run.stderr


def test_verbose_flag_shows_the_traceback(tiny_project):
    tiny_project.write_toml((tiny_project.root / "edgepack.toml").read_text().replace("model.py:build", "model.py:raises"))
    run = _build(tiny_project, "-v")
    assert run.code == 2
    assert "Traceback" in run.stderr


@pytest.mark.slow
def test_pt2_with_pickled_members_is_refused(tiny_project, tmp_path):
    import io
    import json
    import zipfile

    import torch

    import importlib.util
    spec = importlib.util.spec_from_file_location("tiny_model_pt2", tiny_project.root / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    program = torch.export.export(mod.build().eval(), (torch.zeros(1, 1, 4, 4),))
    good = tmp_path / "good.pt2"
    torch.export.save(program, str(good))
    bad = tiny_project.root / "model.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("_weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"]))
                config["config"][first]["use_pickle"] = True
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    text = (tiny_project.root / "edgepack.toml").read_text()
    text = text.replace('factory = "model.py:build"\nweights = "weights.safetensors"', 'program = "model.pt2"')
    tiny_project.write_toml(text)
    assert_one_line_error(_build(tiny_project), 2, "stored as a pickle")
    _no_dist(tiny_project)
