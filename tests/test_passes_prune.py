from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgepack.errors import ConfigError
from edgepack.passes.prune import Prune
from passes_support import context, image_context, small_cnn, trained, val_accuracy
from standard_nets import STANDARD_NETS

STANDARD = (nn.Sequential, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Linear, nn.Dropout)


@pytest.fixture(scope="module")
def base() -> nn.Module:
    return trained(small_cnn, 12)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_plain_modules(model):
    for name, m in model.named_modules():
        assert type(m) in STANDARD, f"{name} is {type(m)}"
        assert not m._forward_pre_hooks and not m._forward_hooks, name
        assert not hasattr(m, "weight_orig") and not hasattr(m, "weight_mask"), name


def test_prune_structured_half_the_channels_gives_smaller_dense_model(base):
    before = _state(base)
    cfg = Prune.Config(method="structured", ratio=0.5)
    result = Prune().run(base, cfg, context())
    model, rep = result.model, result.report

    measured_params = sum(p.numel() for p in model.parameters())
    assert rep["params_after"] == measured_params
    # Halving every hidden width cuts params and MACs of hidden-to-hidden layers to ~1/4.
    assert rep["params_after"] < 0.35 * rep["params_before"], rep
    assert rep["macs_after"] < 0.35 * rep["macs_before"], rep
    assert model[0].out_channels == 8 and model[3].in_channels == 8 and model[4].num_features == 16
    assert model[14].out_features == 10, "the classifier keeps its classes"
    assert rep["shapes_changed"]["0.weight"] == {"before": [16, 1, 3, 3], "after": [8, 1, 3, 3]}
    x = torch.as_tensor(context().validation.x[:5])
    assert model(x).shape == base(x).shape == (5, 10)
    assert not model.training
    _assert_plain_modules(model)
    for k, v in base.state_dict().items():
        assert torch.equal(v, before[k]), f"input model changed at {k}"


@pytest.mark.slow
def test_prune_structured_fine_tuning_recovers_accuracy_on_digits(base):
    base_acc = val_accuracy(base)
    pruned = Prune().run(base, Prune.Config(method="structured", ratio=0.5), context()).model
    tuned = Prune().run(base, Prune.Config(method="structured", ratio=0.5, fine_tune_epochs=8,
                                         learning_rate=3e-3), context()).model
    acc_pruned, acc_tuned = val_accuracy(pruned), val_accuracy(tuned)
    print(f"digits accuracy: base {base_acc:.4f}, pruned 50% {acc_pruned:.4f}, after 8 epochs {acc_tuned:.4f}")
    assert base_acc > 0.97
    assert acc_tuned >= base_acc - 0.02, (base_acc, acc_tuned)
    assert acc_tuned > acc_pruned


def test_prune_structured_leaves_skipped_layer_outputs_alone(base):
    model = Prune().run(base, Prune.Config(method="structured", ratio=0.5, skip_layers=["0"]), context()).model
    assert model[0].out_channels == 16
    assert model[3].out_channels == 16


def test_prune_unstructured_global_zeros_stay_zero_after_fine_tuning(base):
    rounds = {}
    for epochs in (0, 2):
        cfg = Prune.Config(method="unstructured", ratio=0.8, fine_tune_epochs=epochs)
        rounds[epochs] = Prune().run(base, cfg, context())
    rep = rounds[2].report
    assert rep["scope"] == "global" and rep["skipped_layers"] == ["14"]
    prunable = ["0", "3", "7", "11"]
    mods0, mods2 = dict(rounds[0].model.named_modules()), dict(rounds[2].model.named_modules())
    zeros = sum(int((mods2[n].weight == 0).sum()) for n in prunable)
    total = sum(mods2[n].weight.numel() for n in prunable)
    assert zeros / total >= 0.80, zeros / total
    assert rep["sparsity"] == pytest.approx(zeros / total, abs=1e-9)
    for n in prunable:
        mask = mods0[n].weight != 0
        assert torch.equal(mods2[n].weight != 0, mask), f"layer {n}: zeros moved during fine-tuning"
        assert not torch.allclose(mods2[n].weight[mask], mods0[n].weight[mask]), f"layer {n} was not fine-tuned"
    assert (mods2["14"].weight == 0).float().mean() < 0.01, "the output layer is skipped by default"
    _assert_plain_modules(rounds[2].model)
    assert set(rounds[2].model.state_dict()) == set(base.state_dict())


def test_prune_unstructured_layer_scope_prunes_each_layer_by_ratio(base):
    model = Prune().run(base, Prune.Config(method="unstructured", ratio=0.6, scope="layer"), context()).model
    for n in ("0", "3", "7", "11"):
        assert (dict(model.named_modules())[n].weight == 0).float().mean().item() == pytest.approx(0.6, abs=0.01)


def test_prune_same_seed_gives_identical_weights(base):
    cfg = Prune.Config(method="structured", ratio=0.3, fine_tune_epochs=1)
    a = Prune().run(base, cfg, context(seed=3)).model.state_dict()
    b = Prune().run(base, cfg, context(seed=3)).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_prune_fine_tuning_without_training_data_names_data_training(base):
    with pytest.raises(ConfigError, match=r"data\.training"):
        Prune().run(base, Prune.Config(method="unstructured", ratio=0.5, fine_tune_epochs=1), context(training=False))


def test_prune_unknown_skip_layer_lists_the_layers(base):
    with pytest.raises(ConfigError, match=r"skip_layers: no module named 'classifier'.*: 0, 3, 7, 11, 14"):
        Prune().run(base, Prune.Config(method="structured", ratio=0.5, skip_layers=["classifier"]), context())


@pytest.mark.parametrize("ratio", [1.5, 1.0, 0.0, -0.2])
def test_prune_config_rejects_ratio_outside_open_unit_interval(ratio):
    with pytest.raises(ConfigError) as e:
        Prune.Config.from_mapping({"method": "structured", "ratio": ratio}, where="compress.stages[0]")
    assert str(e.value) == (f"compress.stages[0].ratio: ratio must be strictly between 0 and 1 "
                            f"(the fraction removed) (got {ratio!r})")


def test_prune_config_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        Prune.Config.from_mapping({"method": "structured", "ratio": 0.5, "ratoi": 0.5}, where="compress.stages[1]")
    msg = str(e.value)
    assert msg.startswith("compress.stages[1]: unknown key 'ratoi'; valid keys: ")
    assert "ratio" in msg and "fine_tune_epochs" in msg and "skip_layers" in msg


def test_prune_config_reports_every_problem_at_once():
    with pytest.raises(ConfigError) as e:
        Prune.Config.from_mapping({"method": "magic", "ratio": 2, "fine_tune_epochs": -1}, where="s")
    assert len(e.value.problems) == 3
    assert e.value.problems[0].startswith("s.method: Input should be 'unstructured' or 'structured'")
    assert e.value.problems[2] == "s.fine_tune_epochs: Input should be greater than or equal to 0 (got -1)"


def _shapes_in_and_out(model, x) -> dict[str, tuple]:
    """name -> (input shape, output shape) of every module a forward pass on x calls."""
    seen, handles = {}, []

    def record(name, args, out):  # returns None: a forward hook's value would replace the output
        if args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
            seen.setdefault(name, (tuple(args[0].shape), tuple(out.shape)))

    for name, m in model.named_modules():
        handles.append(m.register_forward_hook(lambda mod, args, out, name=name: record(name, args, out)))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return seen


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "resnet18",
                                  "efficientnet_b0"])
def test_prune_structured_standard_nets_at_30_percent_stay_consistent_and_cost_less(name):
    """Depthwise convolutions stay depthwise, squeeze-excite gates keep their block's
    channels, residual blocks keep their input width equal to their output width, and
    the classifier keeps its 1000 classes."""
    torch.manual_seed(0)
    build = STANDARD_NETS[name]
    model = (build(image_size=32) if name == "efficientnet_b0" else build()).eval()
    ctx = image_context()
    x = torch.as_tensor(ctx.validation.x)
    result = Prune().run(model, Prune.Config(method="structured", ratio=0.3), ctx)
    pruned, rep = result.model, result.report

    assert pruned(x).shape == model(x).shape == (16, 1000)
    # Both sides of a pruned layer shrink to 0.7: about half the MACs remain.
    assert rep["macs_after"] < 0.6 * rep["macs_before"], rep
    assert rep["params_after"] < 0.75 * rep["params_before"], rep
    head = rep["skipped_layers"]
    assert len(head) == 1 and dict(pruned.named_modules())[head[0]].out_features == 1000
    before = dict(model.named_modules())
    for n, conv in pruned.named_modules():
        if not isinstance(conv, nn.Conv2d):
            continue
        assert conv.weight.shape[:2] == (conv.out_channels, conv.in_channels // conv.groups), n
        was = before[n]
        if was.groups == was.in_channels == was.out_channels > 1:
            assert conv.groups == conv.in_channels == conv.out_channels < was.out_channels, f"{n} left depthwise"
    shapes_before, shapes_after = _shapes_in_and_out(model, x), _shapes_in_and_out(pruned, x)
    assert set(shapes_before) == set(shapes_after)
    for n, (inp, out) in shapes_before.items():
        if inp == out:  # residual blocks, squeeze-excite gates, normalisations and activations
            assert shapes_after[n][0] == shapes_after[n][1], f"{n}: {shapes_after[n]}"
    pruned.train()(x[:2])  # a fine-tuning stage can train it


def _prune_recipe(**config):
    from edgepack.compress.quantize_stage import DEFAULT
    from edgepack.compress.recipe import ResolvedRecipe, StageSpec

    spec = StageSpec(index=1, pass_name="prune", label="prune", config=Prune.Config(**config), max_drop_pt=None)
    return ResolvedRecipe(name="inline", source="test", stages=(spec,), quantize=DEFAULT, max_total_drop_pt=1.0)


def _budget_error(base, tmp_path, *, collapses: bool = True, **config) -> str:
    from edgepack.compress.engine import StageBudgetError, run_stages
    from passes_support import digits

    with pytest.raises(StageBudgetError) as e:
        run_stages(_prune_recipe(**config), model=base, source_key="digits", project_dir=tmp_path, factory=None,
                   build_fresh=None, ctx=context(), evaluate_on=digits()[1], evaluated_on="validation",
                   cache_dir=None)
    notes = e.value.rows[1].notes
    if collapses:
        assert len(notes) == 1 and notes[0] in str(e.value), "the stage row says it too"
    else:
        assert notes == ()
    return str(e.value)


def test_prune_collapse_by_fine_tuning_names_the_learning_rate(base, tmp_path):
    # Measured on digits: 30 % of the channels pruned leaves ~90 %; two epochs of Adam at
    # 0.3 then take it to chance.
    msg = _budget_error(base, tmp_path, method="structured", ratio=0.3, fine_tune_epochs=2, learning_rate=0.3)
    assert "exceeds the recipe budget of 1 pt; stage 1 (prune): accuracy fell to chance (" in msg, msg
    assert "after pruning 30% of each layer's channels: right after pruning it scored " in msg, msg
    assert "fine-tuning 2 epochs on 1200 samples at learning_rate 0.3 (adam) brought it down" in msg, msg
    assert "try a lower learning_rate" in msg


def test_prune_collapse_by_pruning_says_fine_tuning_did_not_recover_it(base, tmp_path):
    msg = _budget_error(base, tmp_path, method="structured", ratio=0.9, fine_tune_epochs=1)
    assert "stage 1 (prune): accuracy fell " in msg, msg
    assert ("after pruning 90% of each layer's channels: fine-tuning 1 epochs on 1200 samples did not recover it ("
            in msg), msg
    assert "right after pruning); try a lower ratio, more fine_tune_epochs, or a distill stage after it" in msg, msg


def test_prune_budget_failure_without_collapse_names_the_stage_that_lost_most(base, tmp_path):
    # 80 % of the weights zeroed without fine-tuning: 98 % -> 80 %, a drop but no collapse.
    msg = _budget_error(base, tmp_path, collapses=False, method="unstructured", ratio=0.8)
    assert "exceeds the recipe budget of 1 pt; the largest drop was stage 1 (prune): " in msg, msg


def test_diagnose_explains_only_a_collapse_and_reads_the_pass_report():
    from edgepack.compress.diagnose import chance_accuracy, collapsed, explain

    assert chance_accuracy(np.array([0, 1, 1, 2])) == 0.5
    # Half of the margin over chance (0.8 here) is the line: 0.5 keeps exactly half.
    assert not collapsed(before=0.9, after=0.5, chance=0.1) and collapsed(before=0.9, after=0.49, chance=0.1)
    report = {"method": "structured", "ratio": 0.3, "validation_accuracy_after_pruning": 0.5,
              "fine_tune": {"epochs": 2, "samples": 100, "loss_per_epoch": [1.0, float("nan")],
                            "optimizer": "sgd", "learning_rate": 0.5}}
    assert explain("prune", report, before=0.9, after=0.6, chance=0.1) is None, "kept more than half its margin"
    assert explain("prune", report, before=0.12, after=0.1, chance=0.1) is None, "nothing to lose near chance"
    assert explain("prune", report, before=0.9, after=0.1, chance=0.1) == (
        "accuracy fell to chance (10.00%; always answering the most common class scores 10.00%) after pruning 30% "
        "of each layer's channels: fine-tuning diverged (loss nan) at learning_rate 0.5 (sgd); try a lower "
        "learning_rate")
    no_tuning = {"method": "unstructured", "ratio": 0.95, "fine_tune": None}
    assert explain("prune", no_tuning, before=0.9, after=0.4, chance=0.1) == (
        "accuracy fell from 90.00% to 40.00% (chance is 10.00%) after pruning 95% of the weights without "
        "fine-tuning: try a lower ratio, fine_tune_epochs > 0, or a distill stage after it")
    assert "after 16 shared values per layer (4 bits), without fine-tuning: try more bits" in explain(
        "cluster", {"bits": 4}, before=0.9, after=0.2, chance=0.1)


class _Grouped(nn.Module):
    """A grouped convolution (ResNeXt-style, 4 groups) feeding a grouped residual one."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.grouped = nn.Conv2d(32, 64, 3, padding=1, groups=4)
        self.bn = nn.BatchNorm2d(64)
        self.grouped2 = nn.Conv2d(64, 64, 3, padding=1, groups=8)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.grouped(torch.relu(self.stem(x)))))
        return self.fc((self.grouped2(x) + x).mean((2, 3)))


def _kept(original_bias, pruned_bias) -> list[int]:
    """Which original channels a pruned layer kept, found by their (distinct) biases."""
    return [int((original_bias == b).nonzero()) for b in pruned_bias]


def test_prune_structured_grouped_conv_keeps_each_channel_in_its_group_with_its_own_weights():
    torch.manual_seed(0)
    model = _Grouped().eval()
    ctx = image_context(size=8)
    pruned = Prune().run(model, Prune.Config(method="structured", ratio=0.3), ctx).model
    g0, g1 = model.grouped, pruned.grouped
    assert g1.groups == 4 and g1.in_channels < 32 and g1.out_channels < 64 and pruned.grouped2.groups == 8
    kept_in, kept_out = _kept(model.stem.bias, pruned.stem.bias), _kept(g0.bias, g1.bias)
    in_per_group, out_per_group = g1.in_channels // 4, g1.out_channels // 4
    for j, o in enumerate(kept_out):
        group = o // (64 // 4)
        assert group == j // out_per_group, f"output channel {o} moved to another group"
        inputs = kept_in[group * in_per_group:(group + 1) * in_per_group]
        assert all(c // (32 // 4) == group for c in inputs), f"group {group} reads another group's channels"
        torch.testing.assert_close(g1.weight[j], g0.weight[o, [c - group * (32 // 4) for c in inputs]], atol=0, rtol=0)
    x = torch.as_tensor(ctx.validation.x)
    assert pruned(x).shape == (16, 10)


def test_prune_structured_model_with_a_fixed_reshape_is_a_named_error_not_a_crash():
    from edgepack.errors import ToolchainError

    class FixedReshape(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 16, 3, padding=1)
            self.fc = nn.Linear(16 * 64, 10)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).reshape(-1, 16 * 64))  # 16 channels, written out

    with pytest.raises(ToolchainError, match=r"the structured-pruned model no longer runs \(RuntimeError: .*"
                                             r"name the layers before it in skip_layers"):
        Prune().run(FixedReshape().eval(), Prune.Config(method="structured", ratio=0.5), context())
