"""Tasks and their metrics: regression (MAE/RMSE against float labels), embeddings
(cosine similarity to the fp32 model's, gated by min_cosine), unlabelled projects
(parity only), top-k on a classifier, per-output tolerances, and the project's own
metric hook gating a build; real tiny models exported and run in ONNX Runtime."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import TinyProject, assert_one_line_error, cli

# A regressor and an embedder over the same 1x4x4 inputs as the tiny classifier: the
# regressor predicts two numbers (the means of the top and left halves), the embedder
# maps each input to 16 numbers.
MODELS = '''
import torch
from torch import nn


class Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.head = nn.Linear(8 * 4 * 4, 2)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(1))


class Embedder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.head = nn.Linear(8 * 4 * 4, 16)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(1))


def regressor():
    return Regressor()


def embedder():
    return Embedder()
'''

DATA = '''
import numpy as np


def _inputs(n, seed):
    return np.random.default_rng(seed).normal(0.0, 1.0, size=(n, 1, 4, 4)).astype(np.float32)


def _targets(x):
    return np.stack([x[:, 0, :2, :].mean(axis=(1, 2)), x[:, 0, :, :2].mean(axis=(1, 2))], axis=1).astype(np.float32)


def calibration():
    x = _inputs(64, 1)
    return x, _targets(x)


def evaluation():
    x = _inputs(80, 2)
    return x, _targets(x)


def training():
    x = _inputs(400, 3)
    return x, _targets(x)


def inputs_only():
    return _inputs(80, 2)


def inputs_and_none():
    return _inputs(80, 2), None


def int_targets():
    x = _inputs(80, 2)
    return x, np.zeros((80, 3), np.int64)
'''

TARGET = '''
name = "onnx-only"
device = "raspberry-pi-4"
[[artifacts]]
format = "onnx"
precision = "int8"
'''


def _train(root: Path, factory: str) -> None:
    """A few hundred steps towards the regression targets (the embedder too: what it
    learns does not matter, only that its outputs are not random)."""
    import importlib.util
    import sys

    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, str(root))
    try:
        mods = {}
        for name in ("models", "data"):
            spec = importlib.util.spec_from_file_location(f"_tasks_{name}", root / f"{name}.py")
            mods[name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mods[name])
    finally:
        sys.path.remove(str(root))
    torch.manual_seed(0)
    model = getattr(mods["models"], factory)()
    x, y = map(torch.from_numpy, mods["data"].training())
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(200):
        opt.zero_grad()
        out = model(x)
        torch.nn.functional.mse_loss(out[:, :2], y).backward()
        opt.step()
    save_file({k: v.contiguous() for k, v in model.eval().state_dict().items()}, str(root / f"{factory}.safetensors"))


@pytest.fixture(scope="session")
def _weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("task-weights")
    (folder / "models.py").write_text(MODELS)
    (folder / "data.py").write_text(DATA)
    _train(folder, "regressor")
    _train(folder, "embedder")
    return folder


def _project(tmp_path: Path, weights: Path, *, task: str, factory: str, evaluation: str = "evaluation",
             data: str = "", budgets: str = "", output_name: str = "values") -> TinyProject:
    root = tmp_path / task
    root.mkdir()
    (root / "models.py").write_text(MODELS)
    (root / "data.py").write_text(DATA)
    (root / f"{factory}.safetensors").write_bytes((weights / f"{factory}.safetensors").read_bytes())
    (root / "targets").mkdir()
    (root / "targets" / "onnx-only.toml").write_text(TARGET)
    project = TinyProject(root)
    project.write_toml(f'''
        [project]
        name = "{task}"
        version = "0.1.0"

        [model]
        factory = "models.py:{factory}"
        weights = "{factory}.safetensors"
        input_shape = [1, 1, 4, 4]
        output_name = "{output_name}"

        [data]
        task = "{task}"
        calibration = "data.py:calibration"
        evaluation = "data.py:{evaluation}"
        {data}

        [build]
        targets = ["onnx-only"]
        warmup = 1
        iterations = 3

        [budgets]
        {budgets}
    ''')
    return project


def _onnx_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    # The exact x86 int8 kernels, as every edgepack runner selects them (without VNNI the
    # default ones saturate 16-bit pair sums: docs/devices.md).
    options = ort.SessionOptions()
    options.add_session_config_entry("session.x64quantprecision", "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


def _eval_data(root: Path, hook: str = "evaluation"):
    import importlib.util

    spec = importlib.util.spec_from_file_location("_tasks_eval_data", root / "data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, hook)()


# --------------------------------------------------------------------------- units


def test_scorer_top_k_counts_a_label_among_the_k_largest_logits():
    from edgepack.verify.tasks import Scorer

    logits = np.array([[5.0, 4.0, 0.0, 1.0], [0.0, 1.0, 2.0, 3.0], [3.0, 0.0, 2.0, 1.0]], np.float32)
    labels = np.array([1, 0, 2])
    scores = Scorer(task="classification", names=("logits",), top_k=2).score({"logits": logits}, labels)
    # top-1: none right; top-2: sample 0 (label 1 is second) and sample 2 (label 2 is second)
    assert scores == {"accuracy": 0.0, "top2_accuracy": pytest.approx(2 / 3)}


def test_cosine_similarity_per_sample_of_orthogonal_scaled_and_opposite_embeddings():
    from edgepack.verify.tasks import cosine_similarities

    ref = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [0.0, 0.0]])
    out = np.array([[0.0, 3.0], [2.0, 2.0], [0.0, -1.0], [0.0, 0.0]])
    np.testing.assert_allclose(cosine_similarities(ref, out), [0.0, 1.0, -1.0, 1.0], atol=1e-12)


def test_per_output_parity_counts_elements_within_atol_plus_rtol_of_the_reference():
    from edgepack.verify.metrics import compare
    from edgepack.verify.tasks import Scorer

    boxes = np.array([[10.0, 20.0], [30.0, 40.0]])
    scores = np.array([[0.9], [0.1]])
    out_boxes = boxes + np.array([[0.5, 0.1], [3.5, 0.0]])
    scorer = Scorer(task="none", names=("boxes", "scores"))
    parity = compare({"boxes": boxes, "scores": scores}, {"boxes": out_boxes, "scores": scores}, None, scorer=scorer)
    # |err| <= 0.2 + 0.1 * |ref|: 0.5 <= 1.2, 0.1 <= 2.2, 3.5 > 3.2, 0 <= 4.2
    assert parity.outputs["boxes"].within(0.2, 0.1) == 0.75
    assert parity.outputs["boxes"].max_abs_error == pytest.approx(3.5)
    assert parity.outputs["scores"].within(0.0, None) == 1.0 and np.isinf(parity.outputs["scores"].snr_db)
    assert parity.snr_db == parity.outputs["boxes"].snr_db and parity.agreement is None and parity.metrics == {}


# --------------------------------------------------------------------------- configuration


def test_budget_of_another_task_is_a_config_error_naming_the_task_and_the_budgets_that_apply(tmp_path, _weights):
    project = _project(tmp_path, _weights, task="embedding", factory="embedder", evaluation="inputs_only",
                       budgets="max_accuracy_drop_pt = 1.0\nmin_agreement_pct = 95")
    assert_one_line_error(cli("build", "-p", project.root, "--dry-run"), 2, "edgepack.toml",
                          "budgets max_accuracy_drop_pt, min_agreement_pct do not apply to task 'embedding'",
                          "budgets that apply: min_cosine, min_snr_db, outputs")


@pytest.mark.parametrize("budgets, fragments", [
    ("[budgets.outputs.boxes]\natol = 0.1", ("budgets.outputs.boxes", "the model has no output 'boxes'", "outputs: values")),
    ('gated_metric = "mAP"\nmax_metric_drop = 0.1', ("gated_metric 'mAP'", "no data.metric hook")),
    ('gated_metric = "accuracy"\nmax_metric_drop = 0.1', ("gated_metric 'accuracy' is not a metric of task 'regression'", "mae, rmse")),
    ('gated_metric = "mae"', ("budgets", "needs max_metric_drop")),
    ('gated_metric = "mae"\nmetric_direction = "higher"\nmax_metric_drop = 0.1', ("metric_direction 'higher'", "mae is better lower")),
])
def test_bad_metric_or_output_budget_exits_2_before_any_work(tmp_path, _weights, budgets, fragments):
    project = _project(tmp_path, _weights, task="regression", factory="regressor", budgets=budgets)
    assert_one_line_error(cli("build", "-p", project.root, "--dry-run"), 2, *fragments)


def test_regression_labels_must_be_float_numbers_shaped_like_the_output(tmp_path, _weights):
    project = _project(tmp_path, _weights, task="regression", factory="regressor", evaluation="int_targets")
    assert_one_line_error(cli("build", "-p", project.root), 2, "data.evaluation hook", "labels have shape [80, 3]",
                          "shaped like the model's output 'values' [N, 2]")


def test_regression_without_labels_is_refused(tmp_path, _weights):
    project = _project(tmp_path, _weights, task="regression", factory="regressor", evaluation="inputs_and_none")
    assert_one_line_error(cli("build", "-p", project.root), 2, "data.evaluation hook", "no labels",
                          "task 'regression' needs them")


# --------------------------------------------------------------------------- builds


@pytest.mark.slow
def test_regression_build_scores_mae_and_rmse_and_gates_per_output_tolerance(tmp_path, _weights):
    project = _project(tmp_path, _weights, task="regression", factory="regressor",
                       budgets="[budgets.outputs.values]\natol = 0.05\nrtol = 0.05\nmin_within_pct = 95")
    run = cli("build", "-p", project.root)
    assert run.code == 0, run.stdout + run.stderr
    assert "MAE" in run.stdout and "RMSE" in run.stdout and "accuracy" not in run.stdout
    dist = project.root / "dist" / "onnx-only"
    m = json.loads((dist / "manifest.json").read_text())
    (a,) = m["artifacts"]
    assert m["evaluation"]["task"] == "regression" and m["evaluation"]["reference_accuracy"] is None
    assert a["accuracy"] is None and a["agreement"] is None and set(a["metrics"]) == {"mae", "rmse"}
    # The manifest's MAE is the artifact's, run here independently in its runtime.
    x, y = _eval_data(project.root)
    out = _onnx_outputs(dist / "regression.onnx", x)
    assert a["metrics"]["mae"] == pytest.approx(float(np.mean(np.abs(out - y))), abs=1e-5)
    assert a["metrics"]["rmse"] == pytest.approx(float(np.sqrt(np.mean((out - y) ** 2))), abs=1e-5)
    assert 0 < a["metrics"]["mae"] < 0.5  # the trained regressor is close to its targets
    values = a["outputs"]["values"]
    # The share is the artifact's own: recomputed from its outputs and the torch model's.
    expected = _torch_outputs(project.root, "regressor", x)
    within = float(np.mean(np.abs(out - expected) <= 0.05 + 0.05 * np.abs(expected)))
    assert (values["atol"], values["rtol"]) == (0.05, 0.05) and values["within_tolerance"] == pytest.approx(within)
    assert 0.95 <= within < 1.0  # one value of int8 is further off: min_within_pct lets it through
    assert {c["budget"] for c in a["gates"]} == {"outputs.values.within_tolerance"}

    # A tolerance no int8 artifact meets fails the output by name.
    project.write_toml((project.root / "edgepack.toml").read_text().replace("atol = 0.05\nrtol = 0.05", "atol = 0.0"))
    failed = cli("build", "-p", project.root, "--json")
    assert failed.code == 1, failed.stderr
    (failure,) = failed.json()["targets"][0]["failures"]
    assert failure.startswith("regression.onnx (onnx int8): output 'values': ")
    assert "of its values are within 0 of the fp32 reference" in failure and "budget of 95% (budgets.outputs.values)" in failure


@pytest.mark.slow
def test_embedding_cosine_gate_passes_a_sane_budget_and_fails_a_broken_one(tmp_path, _weights):
    project = _project(tmp_path, _weights, task="embedding", factory="embedder", evaluation="inputs_only",
                       output_name="embedding", budgets="min_cosine = { int8 = 0.95 }")
    run = cli("build", "-p", project.root)
    assert run.code == 0, run.stdout + run.stderr
    assert "cos min" in run.stdout
    dist = project.root / "dist" / "onnx-only"
    m = json.loads((dist / "manifest.json").read_text())
    (a,) = m["artifacts"]
    # The cosine is recomputed from the artifact's own outputs and the torch model's.
    from edgepack.verify.tasks import cosine_similarities

    x = _eval_data(project.root, "inputs_only")
    cos = cosine_similarities(_torch_outputs(project.root, "embedder", x), _onnx_outputs(dist / "embedding.onnx", x))
    assert a["metrics"]["cosine_min"] == pytest.approx(float(cos.min()), abs=1e-5)
    assert a["metrics"]["cosine_mean"] == pytest.approx(float(cos.mean()), abs=1e-5)
    assert 0.95 < a["metrics"]["cosine_min"] < 1.0
    check = next(c for c in a["gates"] if c["budget"] == "min_cosine")
    assert check["passed"] and check["limit"] == 0.95

    # Bit-exact int8 embeddings cannot be had: a floor of 1.0 fails, naming the numbers.
    project.write_toml((project.root / "edgepack.toml").read_text().replace("int8 = 0.95", "int8 = 1.0"))
    failed = cli("build", "-p", project.root)
    assert failed.code == 1, failed.stderr
    assert "embedding.onnx (onnx int8): cosine similarity to the fp32 reference's embeddings is" in failed.stdout
    assert f"{a['metrics']['cosine_min']:.4f} on its worst sample" in failed.stdout
    assert "below the int8 budget of 1 (min_cosine)" in failed.stdout


def _torch_outputs(root: Path, factory: str, x: np.ndarray) -> np.ndarray:
    import importlib.util

    import torch
    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location("_tasks_models_check", root / "models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = getattr(mod, factory)()
    model.load_state_dict(load_file(str(root / f"{factory}.safetensors")))
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()


@pytest.mark.slow
def test_unlabelled_project_is_gated_on_parity_only(tmp_path, _weights):
    project = _project(tmp_path, _weights, task="none", factory="embedder", evaluation="inputs_and_none",
                       output_name="features")
    run = cli("build", "-p", project.root)
    assert run.code == 0, run.stdout + run.stderr
    assert "unlabelled: parity only" in run.stdout
    m = json.loads((project.root / "dist" / "onnx-only" / "manifest.json").read_text())
    (a,) = m["artifacts"]
    assert m["evaluation"]["task"] == "none" and "labels_sha256" not in m["evaluation"]
    assert a["metrics"] == {} and a["accuracy"] is None
    assert {c["budget"] for c in a["gates"]} == {"min_snr_db"}
    assert a["outputs"]["features"]["snr_db"] == a["snr_db"] > 20


# --------------------------------------------------------------------------- classification and the metric hook

# The mean margin between the two largest logits: a number that moves with every
# change of the outputs, so int8 shifts it a little.
HOOK = '''

def score(outputs, labels):
    logits = np.sort(outputs["logits"], axis=1)
    return {"margin": float(np.mean(logits[:, -1] - logits[:, -2])), "count": float(len(labels))}


def broken(outputs, labels):
    raise RuntimeError("the scorer lost its config")
'''


@pytest.mark.slow
def test_top_k_on_a_classifier_is_the_artifacts_own(tiny_project):
    text = (tiny_project.root / "edgepack.toml").read_text()
    tiny_project.write_toml(text.replace('training = "data.py:training"', 'training = "data.py:training"\ntop_k = 2'))
    run = cli("build", "-p", tiny_project.root)
    assert run.code == 0, run.stdout + run.stderr
    assert "top2" in run.stdout
    dist = tiny_project.root / "dist" / "onnx-only"
    (a,) = json.loads((dist / "manifest.json").read_text())["artifacts"]
    x, y = _eval_data(tiny_project.root)
    logits = _onnx_outputs(dist / "tiny.onnx", x)
    top2 = np.argsort(-logits, axis=1)[:, :2]
    assert a["metrics"]["top2_accuracy"] == pytest.approx(float(np.mean((top2 == y[:, None]).any(axis=1))), abs=1e-6)
    assert a["metrics"]["accuracy"] == a["accuracy"] <= a["metrics"]["top2_accuracy"]


def test_top_k_must_be_below_the_class_count(tiny_project):
    text = (tiny_project.root / "edgepack.toml").read_text()
    tiny_project.write_toml(text.replace('training = "data.py:training"', 'training = "data.py:training"\ntop_k = 3'))
    assert_one_line_error(cli("build", "-p", tiny_project.root), 2, "data.top_k = 3", "the model outputs 3 classes")


def _with_hook(project: TinyProject, hook: str, budgets: str = "") -> None:
    (project.root / "data.py").write_text((project.root / "data.py").read_text() + HOOK)
    text = (project.root / "edgepack.toml").read_text()
    project.write_toml(text.replace('training = "data.py:training"', f'training = "data.py:training"\nmetric = "data.py:{hook}"')
                       + f"\n[budgets]\n{budgets}\n")


@pytest.mark.slow
def test_metric_hook_gates_the_declared_metric(tiny_project):
    _with_hook(tiny_project, "score", 'gated_metric = "margin"\nmetric_direction = "higher"\nmax_metric_drop = 10.0')
    run = cli("build", "-p", tiny_project.root)
    assert run.code == 0, run.stdout + run.stderr
    assert "margin" in run.stdout and "count" in run.stdout
    dist = tiny_project.root / "dist" / "onnx-only"
    m = json.loads((dist / "manifest.json").read_text())
    (a,) = m["artifacts"]
    x, _ = _eval_data(tiny_project.root)
    logits = np.sort(_onnx_outputs(dist / "tiny.onnx", x), axis=1)
    assert a["metrics"]["margin"] == pytest.approx(float(np.mean(logits[:, -1] - logits[:, -2])), abs=1e-5)
    assert m["evaluation"]["metric_hook"] == "data.py:score" and "margin" in m["evaluation"]["reference_metrics"]
    value, reference = a["metrics"]["margin"], a["reference_metrics"]["margin"]
    assert value != reference  # int8 moved it, so the gate below has something to judge
    check = next(c for c in a["gates"] if c["budget"] == "max_metric_drop")
    assert check["passed"] and check["value"] == pytest.approx(reference - value, abs=1e-5)

    # The direction in which the artifact got worse, and half the change allowed: exit 1.
    direction = "higher" if value < reference else "lower"
    allowed = round(abs(value - reference) / 2, 6)
    text = (tiny_project.root / "edgepack.toml").read_text()
    text = text.replace('metric_direction = "higher"', f'metric_direction = "{direction}"')
    tiny_project.write_toml(text.replace("max_metric_drop = 10.0", f"max_metric_drop = {allowed}"))
    failed = cli("build", "-p", tiny_project.root)
    assert failed.code == 1, failed.stderr
    assert f"tiny.onnx (onnx int8): margin {value:.4g} vs reference {reference:.4g} ({direction} is better)" in failed.stdout
    assert f"exceeds the budget of {allowed:g} (max_metric_drop)" in failed.stdout


def test_metric_hook_that_raises_is_one_line_naming_the_hook_and_its_frame(tiny_project):
    _with_hook(tiny_project, "broken")
    run = cli("build", "-p", tiny_project.root)
    assert_one_line_error(run, 2, "data.metric hook 'data.py:broken'", "data.py:", "in broken",
                          "raised RuntimeError: the scorer lost its config")
    assert not (tiny_project.root / "dist").exists()


# --------------------------------------------------------------------------- compression stages


def test_stage_metric_drop_is_how_much_worse_in_the_metrics_own_units():
    from edgepack.compress.evaluate import StageMetric

    mae = StageMetric("mae", "lower")
    assert mae.drop({"metrics": {"mae": 0.10}}, {"metrics": {"mae": 0.25}}) == pytest.approx(0.15)
    assert mae.drop({"metrics": {"mae": 0.25}}, {"metrics": {"mae": 0.10}}) == pytest.approx(-0.15)
    assert mae.amount(0.15) == "0.15" and mae.budget(0.1) == "0.1"
    accuracy = StageMetric("accuracy", "higher")
    # Accuracies are read from a stage row's own field and counted in points.
    assert accuracy.drop({"accuracy": 0.97}, {"accuracy": 0.95}) == pytest.approx(2.0)
    assert accuracy.amount(2.0) == "2.00 pt"


def test_stages_that_train_are_refused_for_a_task_without_class_labels(tmp_path, _weights):
    project = _project(tmp_path, _weights, task="regression", factory="regressor", data='training = "data.py:training"')
    text = (project.root / "edgepack.toml").read_text()
    project.write_toml(text + '\n[[compress.stages]]\npass = "prune"\nmethod = "structured"\nratio = 0.5\nfine_tune_epochs = 2\n')
    assert_one_line_error(cli("build", "-p", project.root, "--dry-run"), 2, "stage 1 (prune) train the model on class labels",
                          "task 'regression'", "fine_tune_epochs = 0")
