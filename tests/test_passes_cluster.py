from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import save_model
from torch import nn

from edgepack.errors import ConfigError
from edgepack.passes.cluster import Cluster
from passes_support import context, small_cnn, trained, val_accuracy

LAYERS = ["0", "3", "7", "11", "14"]


@pytest.fixture(scope="module")
def base() -> nn.Module:
    return trained(small_cnn, 8)


def test_cluster_3_bits_leaves_at_most_8_values_per_layer_and_shrinks_zlib(base):
    result = Cluster().run(base, Cluster.Config(bits=3), context())
    rep, mods = result.report, dict(result.model.named_modules())
    for name in LAYERS:
        unique = torch.unique(mods[name].weight).numel()
        assert unique <= 8 and rep["layers"][name]["unique_values"] == unique
        assert torch.unique(dict(base.named_modules())[name].weight).numel() > 100, "the input is untouched"
    print({k: rep[k] for k in ("fp32_bytes_before", "zlib_bytes_before", "zlib_bytes_after", "entropy_coded_bytes")})
    assert rep["zlib_bytes_after"] < 0.3 * rep["zlib_bytes_before"], rep
    # 3-bit indices at most: the entropy estimate must beat 32/3 ~ 10.7x on the clustered part.
    assert rep["entropy_coded_bytes"] < rep["fp32_bytes_before"] / 8
    assert val_accuracy(result.model) >= val_accuracy(base) - 0.03


@pytest.mark.slow
def test_cluster_fine_tuning_moves_centroids_but_keeps_assignments(base):
    plain = Cluster().run(base, Cluster.Config(bits=2), context()).model
    tuned = Cluster().run(base, Cluster.Config(bits=2, fine_tune_epochs=3, learning_rate=1e-3), context()).model
    p, t = dict(plain.named_modules()), dict(tuned.named_modules())
    for name in LAYERS:
        before, after = p[name].weight, t[name].weight
        assert torch.unique(after).numel() <= 4
        assert not torch.equal(torch.unique(before), torch.unique(after)), f"{name}: centroids did not move"
        # Same partition: weights that shared a value before still share one after.
        _, inv_before = torch.unique(before, return_inverse=True)
        _, inv_after = torch.unique(after, return_inverse=True)
        assert torch.equal(inv_before, inv_after), f"{name}: assignments changed"
    tr = context().training
    with torch.no_grad():
        loss = [float(nn.functional.cross_entropy(m(torch.as_tensor(tr.x)), torch.as_tensor(tr.y))) for m in (plain, tuned)]
    acc = val_accuracy(plain), val_accuracy(tuned), val_accuracy(base)
    print(f"2-bit clustering: accuracy fp32 {acc[2]:.4f}, clustered {acc[0]:.4f}, centroids fine-tuned {acc[1]:.4f}; "
          f"training loss {loss[0]:.4f} -> {loss[1]:.4f}")
    assert loss[1] < 0.8 * loss[0]
    assert acc[1] >= acc[0] - 0.005


def test_cluster_tie_identical_makes_layers_share_one_parameter(base, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
    with torch.no_grad():
        model[5].weight.copy_(model[3].weight)
        model[5].bias.copy_(model[3].bias)
    model.eval()
    x = torch.as_tensor(context().validation.x[:8])
    result = Cluster().run(model, Cluster.Config(bits=4, tie_identical=True), context())
    tied = result.model
    assert result.report["tied"] == [["3", "5"]]
    assert tied[5].weight is tied[3].weight and tied[5].bias is tied[3].bias
    assert tied[1].weight is not tied[3].weight
    assert model[5].weight is not model[3].weight, "the input model is not modified"
    assert torch.unique(tied[3].weight).numel() <= 16
    # Storage: the tied pair is stored once, in memory and in a deduplicating file writer.
    assert len({p.data_ptr() for p in tied.parameters()}) == len({p.data_ptr() for p in model.parameters()}) - 2
    assert result.report["fp32_bytes_after"] == result.report["fp32_bytes_before"] - (32 * 32 + 32) * 4
    save_model(model, str(tmp_path / "a.safetensors"))
    save_model(tied, str(tmp_path / "b.safetensors"))
    saved = (tmp_path / "a.safetensors").stat().st_size - (tmp_path / "b.safetensors").stat().st_size
    assert saved >= (32 * 32 + 32) * 4, saved
    assert torch.allclose(tied(x), Cluster().run(model, Cluster.Config(bits=4), context()).model(x), atol=1e-6)


def test_cluster_skip_layers_keeps_their_weights_exact(base):
    result = Cluster().run(base, Cluster.Config(bits=2, skip_layers=["14"]), context())
    assert torch.equal(result.model[14].weight, base[14].weight)
    assert "14" not in result.report["layers"]


def test_cluster_is_deterministic_for_a_seed(base):
    cfg = Cluster.Config(bits=3, init="random")
    a = Cluster().run(base, cfg, context(seed=4)).model.state_dict()
    b = Cluster().run(base, cfg, context(seed=4)).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cluster_fine_tuning_without_training_data_names_data_training(base):
    with pytest.raises(ConfigError, match=r"data\.training"):
        Cluster().run(base, Cluster.Config(fine_tune_epochs=1), context(training=False))


@pytest.mark.parametrize(("bits", "message"), [
    (0, "s.bits: Input should be greater than or equal to 1 (got 0)"),
    (9, "s.bits: Input should be less than or equal to 8 (got 9)"),
    ("three", "s.bits: Input should be a valid integer, unable to parse string as an integer (got 'three')"),
])
def test_cluster_config_bits_out_of_range_is_named(bits, message):
    with pytest.raises(ConfigError) as e:
        Cluster.Config.from_mapping({"bits": bits}, where="s")
    assert str(e.value) == message


def test_cluster_config_rejects_unknown_key_with_valid_ones():
    with pytest.raises(ConfigError, match=r"s: unknown key 'tie'; valid keys: .*tie_identical"):
        Cluster.Config.from_mapping({"tie": True}, where="s")


def test_cluster_does_not_mutate_input(base):
    before = copy.deepcopy(base.state_dict())
    Cluster().run(base, Cluster.Config(bits=2, tie_identical=True), context())
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())
