from __future__ import annotations

import pytest
import torch
from torch import nn

from edgepack.errors import ConfigError
from edgepack.passes.reorganize import Reorganize
from passes_support import context, image_context, small_cnn, trained
from standard_nets import STANDARD_NETS, efficientnet_b0


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.drop = nn.Dropout2d(0.3)
        self.fc = nn.Linear(8 * 16, 32)
        self.bn_fc = nn.BatchNorm1d(32)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))
        self.unused = nn.Sequential(nn.Linear(10, 10), nn.BatchNorm1d(10))
        self.aux = nn.Linear(8 * 16, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = nn.functional.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        x = self.drop(x).flatten(1)
        out = self.head(self.bn_fc(self.fc(x)))
        if self.training:  # an auxiliary loss head: dead in eval, alive in training
            out = out + 0.0 * self.aux(x)
        return out


def _randomise_batchnorm(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
            with torch.no_grad():
                m.weight.copy_(torch.randn(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g))


def test_reorganize_folds_batchnorm_and_drops_dropout_with_same_outputs():
    torch.manual_seed(0)
    model = Net()
    _randomise_batchnorm(model)
    model.eval()
    result = Reorganize().run(model, Reorganize.Config(), context())
    out = result.model
    x = torch.as_tensor(context().validation.x)
    with torch.no_grad():
        err = (out(x) - model(x)).abs().max().item()
    assert err <= 1e-5, err
    kinds = {type(m) for m in out.modules()}
    assert not any(issubclass(k, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)) for k in kinds)
    rep = result.report
    assert rep["folded_batchnorm"] == [{"layer": "conv", "batchnorm": "bn"}, {"layer": "conv2", "batchnorm": "bn2"},
                                       {"layer": "fc", "batchnorm": "bn_fc"}]
    assert rep["removed_dropout"] == ["drop", "head.1"]
    assert rep["removed_dead"] == ["unused"]
    assert rep["modules_before"]["BatchNorm2d"] == 2 and "BatchNorm2d" not in rep["modules_after"]
    assert out.conv2.bias is not None and isinstance(out.conv2.bias, nn.Parameter)
    assert not any(k.startswith("unused.") for k in out.state_dict())
    assert hasattr(out, "aux"), "a module used only in training mode is kept"
    out.train()
    out(x[:4])  # still runs in training mode
    assert isinstance(model.bn, nn.BatchNorm2d) and hasattr(model, "unused"), "input untouched"


def test_reorganize_keeps_batchnorm_that_does_not_follow_a_layer():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 36, 10))
    _randomise_batchnorm(model)
    model.eval()
    result = Reorganize().run(model, Reorganize.Config(), context())
    assert isinstance(result.model[2], nn.BatchNorm2d)
    assert result.report["folded_batchnorm"] == []


def test_reorganize_folds_the_digits_cnn_within_tolerance():
    model = trained(small_cnn, 2)
    result = Reorganize().run(model, Reorganize.Config(), context())
    assert len(result.report["folded_batchnorm"]) == 2
    assert result.report["max_abs_output_change"] <= 1e-5
    assert result.report["params_after"] < sum(p.numel() for p in model.parameters())


def test_reorganize_untraceable_model_skips_what_needs_a_trace_and_says_why():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)
            self.bn = nn.BatchNorm1d(10)
            self.drop = nn.Dropout(0.5)
            self.unused = nn.Linear(10, 10)

        def forward(self, x):
            y = self.bn(self.fc(x.flatten(1)))
            return self.drop(y) if x.sum() > 0 else -y

    model = DataDependent().eval()
    _randomise_batchnorm(model)
    result = Reorganize().run(model, Reorganize.Config(), context())
    notes = result.report["notes"]
    assert notes[0].startswith("BatchNorm not folded: torch.fx could not trace the model (TraceError"), notes
    assert notes[1].startswith("no module removed: in eval mode neither torch.fx (TraceError"), notes
    assert "nor torch.export (" in notes[1]
    assert result.report["folded_batchnorm"] == [] and result.report["removed_dead"] == []
    assert hasattr(result.model, "unused"), "nothing proves it unused when no trace exists"
    # The Dropout is called as a module on the check batch (digits sum > 0): replaced.
    assert result.report["removed_dropout"] == ["drop"]
    x = torch.as_tensor(context().validation.x)
    torch.testing.assert_close(_outputs(result.model, x), _outputs(model, x), atol=0, rtol=0)


def test_reorganize_config_rejects_unknown_key():
    with pytest.raises(ConfigError, match=r"s: unknown key 'fuse_bn'; valid keys: fold_batchnorm, remove_dead_modules"):
        Reorganize.Config.from_mapping({"fuse_bn": True}, where="s")


# Folding changes each output by float rounding only; on these outputs (magnitude < 30)
# 1e-5 relative to the largest output is that rounding and nothing more.
FOLD_ATOL = 1e-5


def _outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


class WithSkip(nn.Module):
    """Identity placeholders as EfficientNet blocks hold them: one called explicitly in
    forward, one registered under two names, one never called."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.skip = nn.Identity()
        self.pad = nn.Identity()
        self.pad_alias = self.pad
        self.spare = nn.Identity()
        self.fc = nn.Linear(4 * 64, 10)

    def forward(self, x):
        return self.fc(self.skip(self.conv(self.pad_alias(x))).flatten(1))


def test_reorganize_keeps_identity_modules_the_forward_calls_and_still_runs():
    torch.manual_seed(0)
    model = WithSkip().eval()
    result = Reorganize().run(model, Reorganize.Config(), context())
    out = result.model
    assert isinstance(out.skip, nn.Identity) and isinstance(out.pad_alias, nn.Identity)
    assert isinstance(out.spare, nn.Identity), "a module without tensors saves nothing when deleted"
    assert result.report["removed_dead"] == []
    x = torch.as_tensor(context().validation.x)
    torch.testing.assert_close(_outputs(out, x), _outputs(model, x), atol=0, rtol=0)


class WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.old_head = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        self.register_buffer("old_stats", torch.zeros(100))

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_reorganize_removes_an_unused_submodule_and_the_parameter_count_drops():
    model = WithUnused().eval()
    before = sum(p.numel() for p in model.parameters())
    result = Reorganize().run(model, Reorganize.Config(), context())
    assert result.report["removed_dead"] == ["old_head"]
    assert not hasattr(result.model, "old_head")
    assert result.report["params_after"] == before - (64 * 128 + 128 + 128 * 10 + 10) == 650
    x = torch.as_tensor(context().validation.x)
    torch.testing.assert_close(_outputs(result.model, x), _outputs(model, x), atol=0, rtol=0)


def test_reorganize_replaces_dropout_by_identity_in_place():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10)).eval()
    result = Reorganize().run(model, Reorganize.Config(), context())
    out = result.model
    assert [type(m) for m in out] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Identity, nn.Linear]
    assert result.report["removed_dropout"] == ["3"]
    x = torch.as_tensor(context().validation.x)
    torch.testing.assert_close(_outputs(out, x), _outputs(model, x), atol=0, rtol=0)


def test_reorganize_conv_batchnorm_folding_keeps_outputs_within_float_tolerance():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 64, 10))
    _randomise_batchnorm(model)
    model.eval()
    result = Reorganize().run(model, Reorganize.Config(), context())
    assert len(result.report["folded_batchnorm"]) == 2
    x = torch.as_tensor(context().validation.x)
    expected = _outputs(model, x)
    torch.testing.assert_close(_outputs(result.model, x), expected, atol=FOLD_ATOL * max(1.0, expected.abs().max()),
                               rtol=0)


def test_reorganize_skips_and_names_an_edit_that_breaks_parity():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Flatten(), nn.Dropout(0.2),
                          nn.Linear(8 * 64, 10))
    _randomise_batchnorm(model)
    result = Reorganize().run(model.eval(), Reorganize.Config(tolerance=1e-12), context())
    rep = result.report
    assert [s["edit"] for s in rep["skipped"]] == ["folding BatchNorm '1' into '0'"]
    assert rep["skipped"][0]["reason"].startswith("outputs off by ")
    assert rep["notes"] == [f"kept as it was: folding BatchNorm '1' into '0', which broke parity "
                            f"({rep['skipped'][0]['reason']})"]
    assert rep["folded_batchnorm"] == [] and rep["removed_dropout"] == ["3"]
    assert isinstance(result.model[1], nn.BatchNorm2d) and isinstance(result.model[3], nn.Identity)
    x = torch.as_tensor(context().validation.x)
    torch.testing.assert_close(_outputs(result.model, x), _outputs(model, x), atol=0, rtol=0)


def test_reorganize_keeps_a_batchnorm_whose_tensors_the_forward_reads():
    class ReadsBatchNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
            self.fc = nn.Linear(4 * 64, 10)

        def forward(self, x):
            return self.fc(self.bn(self.conv(x)).flatten(1)) * self.bn.weight.mean()

    model = ReadsBatchNorm().eval()
    _randomise_batchnorm(model)
    result = Reorganize().run(model, Reorganize.Config(), context())
    assert result.report["folded_batchnorm"] == [] and result.report["skipped"] == []
    assert isinstance(result.model.bn, nn.BatchNorm2d)


# EfficientNet-B0 has its own test below.
@pytest.mark.parametrize("name", sorted(set(STANDARD_NETS) - {"efficientnet_b0"}))
def test_reorganize_standard_nets_fold_every_batchnorm_keep_every_called_module_and_outputs(name):
    torch.manual_seed(0)
    build = STANDARD_NETS[name]
    model = build().eval()
    _randomise_batchnorm(model)
    ctx = image_context()
    x = torch.as_tensor(ctx.validation.x)
    called = set()
    handles = [m.register_forward_pre_hook(lambda mod, args, n=n: called.add(n)) for n, m in model.named_modules()]
    expected = _outputs(model, x)
    for h in handles:
        h.remove()
    batchnorms = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]

    result = Reorganize().run(model, Reorganize.Config(), ctx)
    out, rep = result.model, result.report
    assert sorted(f["batchnorm"] for f in rep["folded_batchnorm"]) == sorted(batchnorms)
    assert rep["removed_dead"] == [] and rep["skipped"] == [] and rep["notes"] == []
    remaining = dict(out.named_modules())
    assert called <= set(remaining), f"modules the forward calls are gone: {sorted(called - set(remaining))}"
    torch.testing.assert_close(_outputs(out, x), expected, atol=FOLD_ATOL * max(1.0, expected.abs().max()), rtol=0)
    out.train()(x[:2])  # still runs in training mode, for a fine-tuning stage after it


def test_reorganize_efficientnet_keeps_same_padding_modules_and_removes_an_unused_head():
    """The efficientnet_pytorch port: its convolutions pad through Identity or ZeroPad2d
    children, and its drop-connect draws a random mask in training mode, which torch.fx
    cannot trace (torch.export then proves what training mode uses)."""
    torch.manual_seed(0)
    model = efficientnet_b0(image_size=32).eval()
    model.old_fc = nn.Linear(1280, 1000)  # a head left over from pre-training, never called
    _randomise_batchnorm(model)
    ctx = image_context()
    x = torch.as_tensor(ctx.validation.x)
    called = set()
    handles = [m.register_forward_pre_hook(lambda mod, args, n=n: called.add(n)) for n, m in model.named_modules()]
    expected = _outputs(model, x)
    for h in handles:
        h.remove()
    result = Reorganize().run(model, Reorganize.Config(), ctx)
    out, rep = result.model, result.report
    assert called <= set(dict(out.named_modules()))
    assert rep["skipped"] == [] and rep["notes"] == []
    assert rep["removed_dead"] == ["old_fc"] and not hasattr(out, "old_fc")
    assert rep["removed_dropout"] == ["_dropout"]
    assert len(rep["folded_batchnorm"]) == 49
    assert {"layer": "_blocks.0._depthwise_conv", "batchnorm": "_blocks.0._bn1"} in rep["folded_batchnorm"]
    paddings = {n: type(m.static_padding) for n, m in out.named_modules() if hasattr(m, "static_padding")}
    assert set(paddings.values()) == {nn.Identity, nn.ZeroPad2d}
    assert paddings == {n: type(m.static_padding) for n, m in model.named_modules() if hasattr(m, "static_padding")}
    assert isinstance(out._conv_stem, type(model._conv_stem)) and out._conv_stem.bias is not None
    torch.testing.assert_close(_outputs(out, x), expected, atol=FOLD_ATOL * max(1.0, expected.abs().max()), rtol=0)
    out.train()(x[:2])  # drop-connect and all: still runs in training mode
    # The stage cache rebuilds a model from the factory's: a folded conv of the project's
    # own class (now with a bias) cannot be, so the stage is not cached rather than
    # cached and unreadable.
    from edgepack.compress import snapshot

    with pytest.raises(snapshot.NotSnapshottable, match="module '_conv_stem' is a standard_nets.Conv2dStaticSamePadding"):
        snapshot.describe_edits(out, efficientnet_b0(image_size=32))


def test_reorganize_a_model_of_fixed_batch_is_checked_at_its_batch():
    class FixedBatch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
            self.fc = nn.Linear(4 * 64, 10)

        def forward(self, x):
            return self.fc(self.bn(self.conv(x)).reshape(1, 4 * 64))  # a batch of one, as exported

    model = FixedBatch().eval()
    _randomise_batchnorm(model)
    result = Reorganize().run(model, Reorganize.Config(), context())
    assert result.report["folded_batchnorm"] == [{"layer": "conv", "batchnorm": "bn"}]
    assert result.report["skipped"] == []
    x = torch.as_tensor(context().validation.x[:1])
    expected = _outputs(model, x)
    torch.testing.assert_close(_outputs(result.model, x), expected, atol=FOLD_ATOL * max(1.0, expected.abs().max()),
                               rtol=0)
