from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from edgepack.errors import ConfigError
from edgepack.passes.distill import Distill, combine_teachers, distillation_loss
from edgepack.passes.training import TrainingFields, train
from passes_support import context, digits, mlp, small_cnn, trained, val_accuracy


@pytest.fixture(scope="module")
def teacher() -> nn.Module:
    return trained(small_cnn, 12)


def _resolver(models: dict):
    """ctx.load_model over models held in memory, keyed like the recipe names them."""
    def load(ref, weights):
        if (ref, weights) not in models:
            raise ConfigError(f"{ref}: no such model")
        return copy.deepcopy(models[(ref, weights)])
    return load


def _shifted(model: nn.Module) -> nn.Module:
    """The same network with its class rows rotated: it predicts (y + 1) % 10, confidently."""
    m = copy.deepcopy(model)
    head = m[-1]
    with torch.no_grad():
        head.weight.copy_(torch.roll(head.weight, 1, dims=0))
        head.bias.copy_(torch.roll(head.bias, 1, dims=0))
    return m


def test_combine_teachers_average_probs_uses_normalised_weights():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 5)), rng.normal(size=(4, 5)) * 3
    T = 2.5

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    got = combine_teachers([torch.tensor(a), torch.tensor(b)], [3.0, 1.0], T, "average_probs").numpy()
    np.testing.assert_allclose(got, 0.75 * softmax(a / T) + 0.25 * softmax(b / T), rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-12)
    got = combine_teachers([torch.tensor(a), torch.tensor(b)], [3.0, 1.0], T, "average_logits").numpy()
    np.testing.assert_allclose(got, softmax((0.75 * a + 0.25 * b) / T), rtol=0, atol=1e-12)


def test_distillation_loss_is_weighted_sum_of_scaled_kl_and_cross_entropy():
    s = torch.tensor([[2.0, 0.0, -1.0]], dtype=torch.float64)
    p = torch.tensor([[0.2, 0.5, 0.3]], dtype=torch.float64)
    y = torch.tensor([0])
    T, alpha = 3.0, 0.6
    q = torch.softmax(s / T, 1)
    kl = float((p * (p / q).log()).sum())
    ce = float(-torch.log_softmax(s, 1)[0, 0])
    got = float(distillation_loss(s, p, y, temperature=T, alpha=alpha))
    assert got == pytest.approx(alpha * T * T * kl + (1 - alpha) * ce, rel=1e-12)


@pytest.mark.slow
def test_distill_ensemble_student_follows_the_heavier_teacher(teacher):
    """Two teachers that disagree on every sample: the student (alpha = 1, no labels) must
    learn whichever one the weights favour."""
    wrong = _shifted(teacher)
    _, va = digits()
    y = torch.as_tensor(va.y)
    load = _resolver({("original", None): teacher, ("shifted.py:build", "shifted.safetensors"): wrong})
    outcomes = {}
    for w_true, w_shift in ((3.0, 1.0), (1.0, 3.0)):
        cfg = Distill.Config.model_validate({
            "teachers": [{"model": "original", "weight": w_true},
                         {"model": "shifted.py:build", "weights": "shifted.safetensors", "weight": w_shift}],
            "alpha": 1.0, "temperature": 2.0, "epochs": 15, "learning_rate": 1e-2})
        torch.manual_seed(5)
        result = Distill().run(mlp((32,)), cfg, context(load_model=load))
        pred = result.model(torch.as_tensor(va.x)).argmax(1)
        outcomes[(w_true, w_shift)] = (float((pred == y).float().mean()), float((pred == (y + 1) % 10).float().mean()))
        rep = result.report
        assert [t["validation_accuracy"] for t in rep["teachers"]] == pytest.approx([val_accuracy(teacher), val_accuracy(wrong)], abs=1e-9)
        assert val_accuracy(wrong) < 0.01
    print("student agreement (true labels, shifted labels):", outcomes)
    # The 3:1 target still puts a quarter of its mass on the other teacher's class, so a few
    # images land there; the heavier teacher must win by a wide margin either way round.
    assert outcomes[(3.0, 1.0)][0] > 0.85 and outcomes[(3.0, 1.0)][1] < 0.10
    assert outcomes[(1.0, 3.0)][1] > 0.85 and outcomes[(1.0, 3.0)][0] < 0.10


@pytest.mark.slow
def test_distill_small_student_matches_teacher_and_plain_training(teacher):
    """Fair comparison: same student init, data order, epochs, optimiser and learning rate;
    the only difference is the loss. Three seeds, deterministic.

    Observed on digits: with T = 1, alpha = 0.5 the distilled 4-channel CNN averages 0.45 pt
    above plain training (0.9771 vs 0.9726; ~3 of 597 images, within seed noise); with
    T >= 4 it was 1-2 pt *below* plain training at this short budget. So this test claims what holds: the
    distilled student is no worse than plain training (0.5 pt margin) and within 3 pt of a
    teacher with 6x its parameters."""
    tr, _ = digits()
    plain_acc, kd_acc = [], []
    for seed in range(3):
        torch.manual_seed(100 + seed)
        init = small_cnn(4)
        plain = copy.deepcopy(init)
        settings = TrainingFields(learning_rate=1e-2)
        train(plain, tr, epochs=8, settings=settings, seed=seed)
        cfg = Distill.Config(temperature=1.0, alpha=0.5, epochs=8, learning_rate=1e-2)
        result = Distill().run(init, cfg, context(load_model=_resolver({("original", None): teacher}), seed=seed))
        plain_acc.append(val_accuracy(plain))
        kd_acc.append(val_accuracy(result.model))
        assert result.report["student_validation_accuracy_after"] == pytest.approx(kd_acc[-1], abs=1e-9)
    teacher_acc = val_accuracy(teacher)
    params = sum(p.numel() for p in teacher.parameters()), sum(p.numel() for p in init.parameters())
    print(f"teacher {teacher_acc:.4f} ({params[0]} params); student {params[1]} params: "
          f"plain {np.round(plain_acc, 4)}, distilled {np.round(kd_acc, 4)}")
    assert params[0] > 6 * params[1]
    assert np.mean(kd_acc) >= np.mean(plain_acc) - 0.005
    assert np.mean(kd_acc) >= teacher_acc - 0.03


def test_distill_student_from_factory_replaces_current_model(teacher):
    torch.manual_seed(0)
    load = _resolver({("original", None): teacher, ("student.py:build", None): mlp((16,))})
    cfg = Distill.Config.model_validate({"student": {"model": "student.py:build"}, "epochs": 2})
    result = Distill().run(teacher, cfg, context(load_model=load))
    assert result.report["student"] == "student.py:build"
    assert result.report["student_params"] == 64 * 16 + 16 + 16 * 10 + 10
    assert isinstance(result.model[1], nn.Linear) and not result.model.training


def test_distill_teacher_with_other_outputs_names_both_shapes(teacher):
    other = mlp((16,))
    other[-1] = nn.Linear(16, 5)
    load = _resolver({("original", None): teacher, ("five.py:build", "five.safetensors"): other})
    cfg = Distill.Config.model_validate(
        {"teachers": ["original", {"model": "five.py:build", "weights": "five.safetensors"}], "epochs": 1})
    with pytest.raises(ConfigError, match=r"teachers\[1\] \(five\.py:build \(five\.safetensors\)\) outputs shape "
                                          r"\[1, 5\] but the student outputs \[1, 10\]"):
        Distill().run(teacher, cfg, context(load_model=load))


def test_distill_unloadable_teacher_is_config_error(teacher):
    cfg = Distill.Config.model_validate({"teachers": [{"model": "gone.py:build", "weights": "w.safetensors"}]})
    with pytest.raises(ConfigError, match=r"distill: teachers\[0\] \(gone\.py:build\): gone\.py:build: no such model"):
        Distill().run(teacher, cfg, context(load_model=_resolver({})))


def test_distill_without_training_data_names_data_training(teacher):
    with pytest.raises(ConfigError, match=r"data\.training"):
        Distill().run(teacher, Distill.Config(), context(training=False))


def test_distill_config_teacher_forms_and_errors():
    cfg = Distill.Config.from_mapping({"teachers": ["original", {"model": "big.py:make", "weights": "b.safetensors",
                                                                 "weight": 2}]}, where="st")
    assert [(t.model, t.weights, t.weight) for t in cfg.teachers] == [("original", None, 1.0),
                                                                      ("big.py:make", "b.safetensors", 2.0)]
    with pytest.raises(ConfigError, match=r'st.teachers: teachers\[0\] = \'big.py:make\': write "original" or a table'):
        Distill.Config.from_mapping({"teachers": ["big.py:make"]}, where="st")
    with pytest.raises(ConfigError, match=r'st.teachers.0.model: must read "file.py:factory"'):
        Distill.Config.from_mapping({"teachers": [{"model": "big"}]}, where="st")
    with pytest.raises(ConfigError, match=r"st.teachers.0.weight: Input should be greater than 0 \(got -1\)"):
        Distill.Config.from_mapping({"teachers": [{"model": "original", "weight": -1}]}, where="st")
    with pytest.raises(ConfigError, match=r"st.alpha: Input should be less than or equal to 1 \(got 1.5\)"):
        Distill.Config.from_mapping({"alpha": 1.5}, where="st")
    with pytest.raises(ConfigError, match=r"st.teachers: Tuple should have at least 1 item"):
        Distill.Config.from_mapping({"teachers": []}, where="st")
