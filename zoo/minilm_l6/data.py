"""Data hooks for the MiniLM sentence encoder: English sentences that ship with Python
itself (the first sentence of the docstrings of standard-library functions and
classes), tokenised with the model's own WordPiece tokenizer (`tokenizers`, reading the
tokenizer.json prepare.py copied out of the package), padded or cut to 32 tokens.

Inputs are a dict: `input_ids` and `attention_mask`, both N x 32 int64. There are no
labels for an embedding: each sentence's label is its index, and artifacts are judged
by how close their embeddings are to the fp32 model's. Evaluation and calibration use
sentences of different modules."""

from __future__ import annotations

import importlib
import inspect
from functools import lru_cache
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TOKENIZER = HERE / "weights" / "tokenizer.json"
LENGTH = 32
EVALUATION_MODULES = ("json", "textwrap", "statistics", "heapq", "bisect", "fractions", "shutil", "zipfile")
CALIBRATION_MODULES = ("os.path", "itertools", "functools", "collections", "random", "datetime", "difflib",
                       "string", "tempfile", "glob", "fnmatch", "csv", "base64", "gzip", "calendar")


def sentences(modules: tuple[str, ...], limit: int) -> list[str]:
    """Up to `limit` distinct first sentences, in module and name order."""
    out: list[str] = []
    for name in modules:
        module = importlib.import_module(name)
        for attr in sorted(dir(module)):
            obj = getattr(module, attr)
            if attr.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
                continue
            doc = inspect.getdoc(obj) or ""
            first = " ".join(doc.split("\n\n")[0].split()).split(". ")[0].rstrip(".:")
            if len(first.split()) >= 5 and first not in out:
                out.append(first + ".")
            if len(out) == limit:
                return out
    return out


def tokenize(texts: list[str]) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    tokenizer.enable_padding(length=LENGTH)
    tokenizer.enable_truncation(LENGTH)
    encoded = tokenizer.encode_batch(texts)
    return {"input_ids": np.array([e.ids for e in encoded], np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], np.int64)}


@lru_cache(maxsize=2)
def _split(modules: tuple[str, ...], limit: int):
    return tokenize(sentences(modules, limit))


def _hook(modules: tuple[str, ...], limit: int):
    inputs = {k: v.copy() for k, v in _split(modules, limit).items()}
    return inputs, np.arange(len(inputs["input_ids"]), dtype=np.int64)


def evaluation():
    """48 sentences."""
    return _hook(EVALUATION_MODULES, 48)


def calibration():
    """64 sentences of other modules."""
    return _hook(CALIBRATION_MODULES, 64)
