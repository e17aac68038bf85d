"""The MobileNetV2 sample: the real ImageNet weights, the fp32 model's predictions on
real photos, and int8 artifacts that keep its top-1.

What is measured: top-1 agreement between each int8 artifact (run in its own runtime on
the host) and the fp32 torch model, on the sample's 42 evaluation inputs (7 photos x 6
crops/flips). The photos have no ImageNet labels, so agreement with fp32 is the metric."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import load_sample_module

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "mobilenet_v2"
WEIGHTS = SAMPLE / "weights" / "mobilenet_v2.safetensors"
# sha256 of the file prepare.py writes from the checked checkpoint (deterministic).
WEIGHTS_SHA256 = "0e5370921e9193e41147b50193898db1e0111b54a240964b1e2721a04268c1e6"
CHECKPOINT_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"


def _sample_module(name: str):
    return load_sample_module(SAMPLE, name)


def test_mobilenet_weights_are_the_checked_imagenet_checkpoint():
    assert hashlib.sha256(WEIGHTS.read_bytes()).hexdigest() == WEIGHTS_SHA256
    from safetensors import safe_open

    with safe_open(str(WEIGHTS), "pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta["source_sha256"] == CHECKPOINT_SHA256
    assert meta["source"].endswith("mobilenet_v2-b0353104.pth")
    model = _sample_module("model").build_model()
    assert keys == set(model.state_dict())


def test_mobilenet_costs_match_the_paper():
    from edgepack.devices.costs import model_costs

    costs = model_costs(_sample_module("model").build_model(), np.zeros((1, 3, 224, 224), np.float32))
    # Sandler et al. 2018, Table 4: MobileNetV2 1.0, 224: 300M multiply-adds, 3.4M parameters
    assert 299e6 < costs.macs < 302e6
    assert 3.4e6 < costs.parameters < 3.6e6


@pytest.mark.parametrize("photo, classes", [
    ("chelsea", range(281, 286)),            # tabby, tiger cat, Persian, Siamese, Egyptian cat
    ("coffee", (504, 967, 968)),             # coffee mug, espresso, cup
])
def test_mobilenet_fp32_top1_is_the_right_imagenet_class(photo, classes):
    pytest.importorskip("skimage", reason="the sample's photos ship with scikit-image")
    data = _sample_module("data")
    x = data.preprocess(data._photo(photo))
    assert x.shape == (1, 3, 224, 224)
    assert int(data.fp32_top1(x)[0]) in classes


def test_mobilenet_data_hooks_are_disjoint_photos_labelled_by_fp32():
    pytest.importorskip("skimage", reason="the sample's photos ship with scikit-image")
    data = _sample_module("data")
    assert not set(data.EVALUATION_PHOTOS) & set(data.CALIBRATION_PHOTOS)
    x, y = data.evaluation()
    assert x.shape == (42, 3, 224, 224) and x.dtype == np.float32
    np.testing.assert_array_equal(y, data.fp32_top1(x))


@pytest.mark.slow
def test_mobilenet_int8_artifacts_keep_80_percent_top1_agreement(tmp_path):
    pytest.importorskip("skimage", reason="the sample's photos ship with scikit-image")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-m", "edgepack", "build", "-p", str(SAMPLE), "-t", "android", "-o", str(tmp_path),
                           "--json", "--no-latency-gate"], capture_output=True, text=True, env=env, timeout=1800)
    # The sample's own budgets (edgepack.toml, with their reason) replace the android
    # target's int8 ones, which PTQ of MobileNetV2 does not meet on these ambiguous photos.
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)["targets"][0]["manifest"]
    assert manifest["budgets"]["min_agreement_pct"]["int8"] == 80.0 and manifest["budgets"]["min_snr_db"]["int8"] == 12.0
    arts = {a["format"]: a for a in manifest["artifacts"]}
    assert set(arts) == {"tflite", "executorch", "onnx"}
    for fmt, a in arts.items():
        assert a["precision"] == "int8"
        assert a["evaluated_samples"] == 42
        assert a["agreement"] >= 0.80, (fmt, a["agreement"])
    assert arts["tflite"]["export"]["tensors_by_dtype"].get("float32", 0) == 0   # full-integer, residual adds included
