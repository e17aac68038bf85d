"""A Hugging Face transformers model built by a project's factory (token ids and an
attention mask in, the encoder's hidden states out) goes through every format: each
artifact, run in its own runtime, computes what the transformers module does."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import cli

transformers = pytest.importorskip("transformers", reason="transformers builds the model")

MODEL = '''
from transformers import BertConfig, BertModel


def build():
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=32)
    return BertModel(config, add_pooling_layer=False).eval()
'''

DATA = '''
import numpy as np


def _tokens(seed, n):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 100, (n, 12)).astype(np.int64)
    mask = np.ones_like(ids)
    for i, length in enumerate(rng.integers(4, 13, n)):   # padded sentences of 4 to 12 tokens
        ids[i, length:], mask[i, length:] = 0, 0
    return {"input_ids": ids, "attention_mask": mask}


def calibration():
    return _tokens(0, 32)


def evaluation():
    return _tokens(1, 24)
'''

TOML = '''
[project]
name = "bert"
version = "0.1.0"

[model]
factory = "model.py:build"
weights = "weights.safetensors"

[[model.inputs]]
name = "input_ids"
shape = [1, 12]
dtype = "int64"

[[model.inputs]]
name = "attention_mask"
shape = [1, 12]
dtype = "int64"

[[model.outputs]]
name = "last_hidden_state"

[data]
calibration = "data.py:calibration"
evaluation = "data.py:evaluation"
task = "none"

[build]
targets = ["fp32-all"]
warmup = 1
iterations = 3
'''

TARGET = '''
name = "fp32-all"
device = "pixel-7"
[[artifacts]]
format = "tflite"
precision = "fp32"
[[artifacts]]
format = "executorch"
precision = "fp32"
[[artifacts]]
format = "onnx"
precision = "fp32"
'''


@pytest.fixture(scope="module")
def bert_project(tmp_path_factory) -> Path:
    import importlib.util

    import torch
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("bert")
    (root / "model.py").write_text(MODEL)
    (root / "data.py").write_text(DATA)
    (root / "edgepack.toml").write_text(textwrap.dedent(TOML))
    (root / "targets").mkdir()
    (root / "targets" / "fp32-all.toml").write_text(TARGET)
    spec = importlib.util.spec_from_file_location("bert_model", root / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    model = mod.build()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "weights.safetensors"))
    return root


@pytest.mark.slow
def test_transformers_bert_factory_builds_every_format_matching_transformers(bert_project):
    import torch
    from safetensors.torch import load_file

    from edgepack.devices.base import run_declared
    from edgepack.devices.host import HostRunner

    run = cli("build", "-p", bert_project, "-o", bert_project / "dist")
    assert run.code == 0, run.stderr
    dist = bert_project / "dist" / "fp32-all"
    manifest = json.loads((dist / "manifest.json").read_text())
    assert sorted(a["format"] for a in manifest["artifacts"]) == ["executorch", "onnx", "tflite"]

    # The reference is transformers' own module, run here, independently of edgepack.
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=32)
    reference = transformers.BertModel(config, add_pooling_layer=False).eval()
    reference.load_state_dict(load_file(str(bert_project / "weights.safetensors")))
    rng = np.random.default_rng(7)
    ids = rng.integers(1, 100, (4, 12)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 8:] = mask[3, 5:] = 0
    ids[mask == 0] = 0
    with torch.no_grad():
        want = reference(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
    names = ["input_ids", "attention_mask"]
    for a in manifest["artifacts"]:
        assert [i["name"] for i in a["signature"]["inputs"]] == names, a["file"]
        got = run_declared(HostRunner(), dist / a["file"], a["format"], (ids, mask), input_names=names,
                           output_names=["last_hidden_state"], warmup=0, iterations=1, threads=1).outputs[0]
        # fp32 kernels differ in summation order only: measured max |error| 7e-7 to 1e-6
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=a["file"])
