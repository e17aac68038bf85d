import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, assert_one_line_error, cli
from edgepack.config.loader import builtin_dir, load_project, profiles_catalog, targets_catalog
from edgepack.errors import ConfigError
from edgepack.plan import make_plan


def test_builtin_targets_and_profiles_all_parse():
    targets, problems = targets_catalog().load_all()
    assert problems == []
    assert {"android", "raspberry-pi", "linux-arm64"} <= {t.name for t in targets}
    profiles, problems = profiles_catalog().load_all()
    assert problems == []
    assert {"pixel-7", "raspberry-pi-4", "raspberry-pi-5", "cortex-a53-iot"} <= {p.name for p in profiles}
    names = {p.name for p in profiles}
    assert all(t.device in names for t in targets)


def test_project_unknown_key_is_named_with_file_and_path(tiny_project):
    text = (tiny_project.root / "edgepack.toml").read_text().replace("[data]", "[data]\ncalibraton = \"x.py:y\"")
    tiny_project.write_toml(text)
    with pytest.raises(ConfigError) as e:
        load_project(tiny_project.root)
    assert "edgepack.toml: data.calibraton: unknown key" in str(e.value)


def test_project_reports_every_problem_at_once(tiny_project):
    text = (tiny_project.root / "edgepack.toml").read_text()
    text = text.replace('input_shape = [1, 1, 4, 4]', 'input_shape = [1, 0, 4]\ncolour = "red"').replace("iterations = 5", "iterations = 0")
    tiny_project.write_toml(text)
    with pytest.raises(ConfigError) as e:
        load_project(tiny_project.root)
    problems = e.value.problems
    assert any("model.input_shape" in p and "positive" in p for p in problems)
    assert any("model.colour: unknown key" in p for p in problems)
    assert any("build.iterations" in p for p in problems)
    assert len(problems) == 3


def test_unknown_target_lists_the_valid_ones(tiny_project):
    run = cli("build", "-p", tiny_project.root, "-t", "androd", "--dry-run")
    assert_one_line_error(run, 2, "unknown target 'androd'", "android", "raspberry-pi", "onnx-only")


def test_project_local_target_overrides_builtin(tiny_project):
    tiny_project.add_target("android", precision="fp32")
    plan = make_plan(tiny_project.root, targets=["android"])
    (tp,) = plan.targets
    assert [(a.format, a.precision) for a in tp.target.artifacts] == [("onnx", "fp32")]
    assert tp.device.name == "raspberry-pi-4"


def test_target_naming_an_unknown_device_is_reported(tiny_project):
    tiny_project.add_target("odd")
    path = tiny_project.root / "targets" / "odd.toml"
    path.write_text(path.read_text().replace('device = "raspberry-pi-4"', 'device = "pixel-99"'))
    with pytest.raises(ConfigError) as e:
        make_plan(tiny_project.root, targets=["odd"])
    assert "unknown device profile 'pixel-99'" in str(e.value.problems)
    assert "pixel-7" in str(e.value.problems)


PATH_NAMES = {
    "version": ('version = "0.1.0"', 'version = "1/../../../../evil"', "project.version", "not a valid version"),
    "project name": ('name = "tiny"', 'name = "-rf"', "project.name", "not a valid name"),
    "target name": ('targets = ["onnx-only"]', 'targets = ["evil"]', "evil.toml: name", "not a valid name"),
}


@pytest.mark.parametrize("case", sorted(PATH_NAMES))
def test_names_that_become_paths_are_checked_when_the_config_loads(tiny_project, tmp_path, case):
    """A version or name with a '/' or '..' would put the dist folder or the release
    archive (and its members) outside the output folder."""
    old, new, field, problem = PATH_NAMES[case]
    tiny_project.write_toml((tiny_project.root / "edgepack.toml").read_text().replace(old, new))
    (tiny_project.root / "targets" / "evil.toml").write_text(
        (tiny_project.root / "targets" / "onnx-only.toml").read_text().replace('name = "onnx-only"', 'name = "../../evil"'))
    run = cli("build", "-p", tiny_project.root, "-o", tmp_path / "out")
    assert_one_line_error(run, 2, field, problem, "letters, digits")
    assert len([ln for ln in run.stderr.splitlines() if ln.strip()]) == 1, run.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "evil").exists()


def test_versions_with_pre_release_and_build_parts_are_valid(tiny_project):
    tiny_project.write_toml((tiny_project.root / "edgepack.toml").read_text()
                            .replace('version = "0.1.0"', 'version = "2.1.0rc1+build.5"'))
    assert load_project(tiny_project.root).project.version == "2.1.0rc1+build.5"


def test_package_target_that_is_a_path_exits_2(tmp_path):
    run = cli("package", "-t", "../../etc", "-o", tmp_path)
    assert_one_line_error(run, 2, "--target", "'../../etc' is not a valid name")


def test_profile_rejects_qemu_max_cpu(tmp_path):
    src = (REPO / "profiles" / "raspberry-pi-4.toml").read_text().replace('qemu_cpu = "cortex-a72"', 'qemu_cpu = "max"')
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "raspberry-pi-4.toml").write_text(src)
    with pytest.raises(ConfigError) as e:
        profiles_catalog(tmp_path).load("raspberry-pi-4")
    assert "qemu_cpu" in str(e.value) and "max" in str(e.value)


def test_dry_run_prints_plan_and_writes_nothing(tiny_project):
    run = cli("build", "-p", tiny_project.root, "--dry-run", "--json")
    assert run.code == 0, run.stderr
    plan = run.json()
    assert plan["schema"] == "edgepack.plan/1"
    assert plan["targets"][0]["artifacts"] == [{"format": "onnx", "precision": "int8", "delegate": "xnnpack", "file": "tiny.onnx"}]
    assert not (tiny_project.root / "dist").exists()


def test_targets_show_prints_resolved_target_with_device():
    run = cli("targets", "show", "android")
    assert run.code == 0, run.stderr
    doc = run.json()
    assert doc["target"]["device"] == "pixel-7"
    assert doc["device_profile"]["qemu_cpu"] == "cortex-a76"
    assert doc["target"]["budgets"]["max_accuracy_drop_pt"] == 1.0


def test_devices_lists_shipped_profiles_as_json():
    run = cli("devices", "--json")
    assert run.code == 0, run.stderr
    names = {d["name"] for d in run.json()["devices"]}
    assert {"pixel-7", "raspberry-pi-4", "raspberry-pi-5", "cortex-a53-iot"} <= names


@pytest.mark.slow
def test_builtin_targets_ship_inside_the_wheel(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("edgepack-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "edgepack/_builtin/targets/android.toml" in names
    assert "edgepack/_builtin/profiles/pixel-7.toml" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = "from edgepack.config.loader import builtin_dir, targets_catalog; print(builtin_dir('targets')); print(targets_catalog().names())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, cwd=tmp_path).stdout
    assert str(site / "edgepack" / "_builtin" / "targets") in out
    assert "'android'" in out
