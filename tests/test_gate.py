"""The parity gates: top-1 agreement and logit SNR against the fp32 model, per precision,
next to the accuracy drop; their budgets from targets and projects; what a failure says,
where it is recorded and where the build goes."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import assert_one_line_error, cli
from edgepack.config.schema import Budgets, BudgetOverrides
from edgepack.pipeline.gate import parity_and_size
from edgepack.pipeline.records import ArtifactRecord, ExportKey, Verified
from edgepack.verify.metrics import compare


def _record(precision: str, reference: np.ndarray, output: np.ndarray, labels: np.ndarray) -> ArtifactRecord:
    parity = compare(reference, output, labels)
    return ArtifactRecord(file=f"m-{precision}.onnx", key=ExportKey("onnx", precision), artifact=SimpleNamespace(size_bytes=10),
                          verified=Verified(parity=parity, latency_ms={}, recorded=output[:2]), fp32_reference_bytes=40)


def _outputs(flipped: int, noise: float, n: int = 100):
    """Reference logits with a clear winner per sample, and outputs with `flipped` samples'
    top-1 moved to another class and Gaussian noise of `noise` x the logits' RMS."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 10
    reference = rng.normal(0, 1, (n, 10)).astype(np.float32)
    reference[np.arange(n), labels] += 6.0
    output = reference + rng.normal(0, noise * float(np.sqrt(np.mean(reference**2))), reference.shape).astype(np.float32)
    for i in range(flipped):
        output[i, (labels[i] + 1) % 10] = output[i].max() + 1.0
    return reference, output, labels


def _by_budget(checks):
    return {c.budget: c for c in checks}


def test_gate_agreement_below_the_int8_budget_names_artifact_value_and_budget():
    reference, output, labels = _outputs(flipped=3, noise=0.01)
    checks = _by_budget(parity_and_size(Budgets(max_accuracy_drop_pt=100), _record("int8", reference, output, labels)))
    agreement = checks["min_agreement_pct"]
    assert not agreement.passed and agreement.value == pytest.approx(97.0) and agreement.limit == 98.0
    assert agreement.failure == ("m-int8.onnx (onnx int8): top-1 agreement with the fp32 reference 97.00% (97 of 100 "
                                 "samples) is below the int8 budget of 98% (min_agreement_pct)")
    assert checks["max_accuracy_drop_pt"].passed


def test_gate_snr_budget_is_per_precision():
    # noise of 3% of the logits' RMS: about 30 dB, within int8's 20 dB floor, far below fp32's 60 dB
    reference, output, labels = _outputs(flipped=0, noise=0.03)
    budgets = Budgets()
    int8 = _by_budget(parity_and_size(budgets, _record("int8", reference, output, labels)))["min_snr_db"]
    fp32 = _by_budget(parity_and_size(budgets, _record("fp32", reference, output, labels)))["min_snr_db"]
    assert 25 < int8.value < 35 and int8.passed and int8.limit == 20.0
    assert fp32.value == int8.value and not fp32.passed and fp32.limit == 60.0
    assert f"logit SNR against the fp32 reference {fp32.value:.1f} dB is below the fp32 budget of 60 dB (min_snr_db)" in fp32.failure
    assert fp32.failure.startswith("m-fp32.onnx (onnx fp32): ")


def test_gate_bit_identical_outputs_pass_with_a_null_snr():
    reference, _, labels = _outputs(flipped=0, noise=0.0)
    checks = _by_budget(parity_and_size(Budgets(), _record("fp32", reference, reference.copy(), labels)))
    assert checks["min_snr_db"].passed and checks["min_snr_db"].to_json()["value"] is None
    assert checks["min_agreement_pct"].passed and checks["min_agreement_pct"].value == 100.0


def test_budgets_precision_table_keeps_defaults_for_the_others():
    b = Budgets(min_snr_db={"int8": 25.0})
    assert b.min_snr_db == {"fp32": 60.0, "fp16": 30.0, "int8": 25.0, "int8-dynamic": 20.0}
    assert Budgets(min_agreement_pct=95).min_agreement_pct == dict.fromkeys(("fp32", "fp16", "int8", "int8-dynamic"), 95)


def test_project_budget_table_replaces_only_the_precisions_it_names():
    target = Budgets(min_agreement_pct={"int8": 97.0})
    merged = BudgetOverrides(min_agreement_pct={"int8": 80.0}).apply_to(target)
    assert merged.min_agreement_pct == {"fp32": 99.0, "fp16": 99.0, "int8": 80.0, "int8-dynamic": 98.0}
    assert BudgetOverrides(min_snr_db=10).apply_to(target).min_snr_db == dict.fromkeys(("fp32", "fp16", "int8", "int8-dynamic"), 10)
    assert BudgetOverrides().apply_to(target) is target


@pytest.mark.parametrize("line, fragments", [
    ("min_agreement_pct = { int4 = 90.0 }", ("budgets.min_agreement_pct", "int4", "'fp32', 'fp16', 'int8' or 'int8-dynamic'")),
    ("min_agreement_pct = 101", ("budgets.min_agreement_pct", "101 is not a percentage")),
    ("min_snr_db = \"high\"", ("budgets.min_snr_db",)),
])
def test_bad_parity_budget_in_a_target_exits_2_naming_file_and_field(tiny_project, line, fragments):
    tiny_project.add_target("onnx-only", extra=line)
    run = cli("build", "-p", tiny_project.root, "--dry-run")
    assert_one_line_error(run, 2, "onnx-only.toml", *fragments)


def test_bad_parity_budget_in_the_project_exits_2(tiny_project):
    text = (tiny_project.root / "edgepack.toml").read_text()
    tiny_project.write_toml(text + "\n[budgets]\nmin_snr_db = { int9 = 3.0 }\n")
    assert_one_line_error(cli("build", "-p", tiny_project.root, "--dry-run"), 2, "edgepack.toml", "budgets.min_snr_db")


@pytest.mark.slow
def test_build_over_the_snr_budget_exits_1_into_rejected_with_checks_in_the_manifest(tiny_project):
    # An int8 artifact cannot reach 90 dB: the SNR gate fails it, nothing else does.
    tiny_project.add_target("onnx-only", extra="min_snr_db = { int8 = 90.0 }")
    run = cli("build", "-p", tiny_project.root, "--json")
    assert run.code == 1, run.stderr
    (target,) = run.json()["targets"]
    (failure,) = target["failures"]
    assert failure.startswith("tiny.onnx (onnx int8): logit SNR against the fp32 reference ")
    assert failure.endswith(" dB is below the int8 budget of 90 dB (min_snr_db)")
    assert not (tiny_project.root / "dist" / "onnx-only").exists()
    manifest = json.loads((tiny_project.root / "dist" / "onnx-only.rejected" / "manifest.json").read_text())
    assert manifest["gates"] == {"passed": False, "failures": [failure], "latency": "no latency budget",
                                 "latency_gate": "no_budget"}
    assert manifest["budgets"]["min_snr_db"]["int8"] == 90.0
    assert manifest["budgets"]["min_agreement_pct"]["int8"] == 98.0
    (artifact,) = manifest["artifacts"]
    checks = {c["budget"]: c for c in artifact["gates"]}
    assert set(checks) == {"max_accuracy_drop_pt", "min_agreement_pct", "min_snr_db"}
    snr = checks["min_snr_db"]
    assert (snr["limit"], snr["passed"]) == (90.0, False) and abs(snr["value"] - artifact["snr_db"]) < 0.01
    assert checks["min_agreement_pct"]["value"] == pytest.approx(artifact["agreement"] * 100) and checks["min_agreement_pct"]["passed"]
    # The table says it too, as it says every other gate failure.
    table = cli("build", "-p", tiny_project.root)
    assert table.code == 1 and "logit SNR against the fp32 reference" in table.stdout and "FAILED the onnx-only budget" in table.stdout


def test_target_snr_floor_judges_only_outputs_without_a_budget_of_their_own():
    # A detector: class logits at ~30 dB, box corrections at ~14 dB. The target's 20 dB
    # floor fails the boxes until the project gives them a budget of their own; then it
    # judges the logits alone and the boxes are judged by their tolerance.
    from edgepack.config.schema import OutputBudget
    from edgepack.verify.tasks import Scorer

    reference, output, labels = _outputs(flipped=0, noise=0.03)
    rng = np.random.default_rng(1)
    boxes = rng.normal(0, 0.1, (len(labels), 4)).astype(np.float32)
    noisy_boxes = boxes + rng.normal(0, 0.02, boxes.shape).astype(np.float32)
    scorer = Scorer(task="classification", names=("logits", "box"))
    parity = compare((reference, boxes), (output, noisy_boxes), labels, scorer=scorer)
    rec = ArtifactRecord(file="det.onnx", key=ExportKey("onnx", "int8"), artifact=SimpleNamespace(size_bytes=10),
                         verified=Verified(parity=parity, latency_ms={}, recorded=None), fp32_reference_bytes=40)
    box_snr, logit_snr = parity.outputs["box"].snr_db, parity.outputs["logits"].snr_db
    assert 10 < box_snr < 18 and logit_snr > 25

    plain = _by_budget(parity_and_size(Budgets(), rec))["min_snr_db"]
    assert not plain.passed and plain.value == pytest.approx(box_snr)
    assert f"{box_snr:.1f} dB (output 'box', the lowest of 2) is below the int8 budget of 20 dB" in plain.failure

    within = float(np.mean(np.abs(noisy_boxes - boxes) <= 0.05))
    own = _by_budget(parity_and_size(Budgets(outputs={"box": OutputBudget(atol=0.05, min_within_pct=95)}), rec))
    assert own["min_snr_db"].passed and own["min_snr_db"].value == pytest.approx(logit_snr)
    assert own["outputs.box.within_tolerance"].value == pytest.approx(within * 100) and within > 0.95
    assert own["outputs.box.within_tolerance"].passed

    every = {"box": OutputBudget(atol=0.05, min_within_pct=95), "logits": OutputBudget(min_snr_db=20)}
    assert "min_snr_db" not in _by_budget(parity_and_size(Budgets(outputs=every), rec))
