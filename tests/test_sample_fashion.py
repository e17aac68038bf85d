"""The fashion sample: its data hooks read Debian's Fashion-MNIST package into the fixed
split data.py documents, and its committed student and teacher weights are real,
trained models."""

import importlib.util

import numpy as np
import pytest

from conftest import REPO

FASHION = REPO / "samples" / "fashion"
FIRST = 2000  # test images scored: enough to tell a trained model from a broken one, fast


def _load(name: str):
    # Unique module names: the digits sample also has top-level model.py and data.py.
    spec = importlib.util.spec_from_file_location(f"fashion_sample_{name}", FASHION / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data():
    module = _load("data")
    if not module.ROOT.is_dir():
        pytest.skip(f"{module.ROOT} missing: {module.INSTALL} (.ci/run installs it)")
    return module


def test_fashion_data_hooks_raise_file_not_found_with_install_command_when_package_missing(tmp_path, monkeypatch):
    module = _load("data")
    monkeypatch.setattr(module, "ROOT", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        module.evaluation()


@pytest.mark.slow
def test_fashion_data_hooks_return_fixed_disjoint_split_of_28x28_images(data):
    sizes = {"training": 54_000, "validation": 5_000, "calibration": 1_000, "evaluation": 10_000}
    for hook, size in sizes.items():
        x, y = getattr(data, hook)()
        assert x.shape == (size, 1, 28, 28) and x.dtype == np.float32, hook
        assert y.shape == (size,) and y.dtype == np.int64, hook
        assert 0.0 <= x.min() and x.max() <= 1.0, hook
        assert set(np.unique(y)) == set(range(10)), hook
    # The three train-set slices tile the official 60,000 images in order, without overlap.
    official_x, official_y = data._official("train")
    pieces = [data.training(), data.validation(), data.calibration()]
    assert np.array_equal(np.concatenate([p[0] for p in pieces]), official_x)
    assert np.array_equal(np.concatenate([p[1] for p in pieces]), official_y)


# Accuracy of the committed weights on the first 2,000 test images, measured when they were
# trained; 0.5 pt (10 images) of tolerance absorbs CPU kernels that sum in another order.
@pytest.mark.slow
@pytest.mark.parametrize(("factory", "weights", "accuracy"), [
    ("build_model", "fashion.safetensors", 0.9205),
    ("build_teacher", "teacher.safetensors", 0.9365),
])
def test_fashion_committed_weights_reach_stated_accuracy(data, factory, weights, accuracy):
    import torch
    from safetensors.torch import load_file

    model = getattr(_load("model"), factory)()
    model.load_state_dict(load_file(str(FASHION / "weights" / weights)), strict=True)
    model.eval()
    x, y = data.evaluation()
    with torch.no_grad():
        predicted = model(torch.from_numpy(x[:FIRST])).argmax(1).numpy()
    assert float((predicted == y[:FIRST]).mean()) == pytest.approx(accuracy, abs=0.005)


def test_fashion_teacher_is_clearly_larger_than_student():
    module = _load("model")
    student, teacher = (sum(p.numel() for p in f().parameters()) for f in (module.build_model, module.build_teacher))
    assert 4 * student <= teacher <= 10 * student
