"""Data hooks for the ONNX digits sample: the model is the digits sample's CNN, so its
data are that sample's splits (samples/digits/data.py), channels first."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("digits_data", Path(__file__).resolve().parent.parent / "digits" / "data.py")
_digits = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_digits)


def calibration():
    return _digits.calibration()


def evaluation():
    return _digits.evaluation()
