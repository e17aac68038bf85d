"""What the PT2E-based exporters (ExecuTorch, LiteRT) share: capturing a model for
calibration and feeding it calibration batches."""

from __future__ import annotations

import sys
import types
from contextlib import contextmanager

from dataclasses import dataclass

import numpy as np

CALIBRATION_BATCH = 32


@dataclass(frozen=True)
class Prepared:
    """What both PT2E exporters start from: the request's options, its dynamic dims, the
    model, the example at the deployed shape, and the example and dynamic_shapes to trace."""

    opts: object
    dims: tuple            # per input, its dynamic dims; () when none
    module: object
    example: tuple         # one tensor per input
    traced: tuple
    shapes: object

    @property
    def flat_dims(self) -> tuple:
        return tuple(d for per_input in self.dims for d in per_input)


def prepare(req, *, trace_at_max: bool) -> Prepared:
    from edgepack.exporters import dynamic_shapes_spec, example_for

    dims = tuple(req.dynamic_dims)
    example = as_tensors(req.example)
    traced = as_tensors(example_for(req.example, dims, at_max=trace_at_max)) if dims else example
    shapes = dynamic_shapes_spec(dims) if dims else None
    # Requests carry models in eval mode already (ExportRequest). Calling eval() again is
    # not only redundant: an exported program's module() refuses it (NotImplementedError).
    return Prepared(req.options, dims, req.module, example, traced, shapes)


def batch_bound(dims) -> int:
    """The largest batch a dynamic batch dim allows (0 when the batch is static)."""
    return max([d.max for per_input in dims for d in per_input if d.dim == 0], default=0)


def calibrate_and_convert(captured, quantizer, calibration, *, opts, dynamic: bool, fold_quantize: bool = True,
                          fmt: str = "", details: dict | None = None):
    """The PT2E steps both backends share: modules named in keep_float stay float, observers
    are inserted, calibration batches run (dynamic ranges need none), and the observed
    graph is converted to quantize/dequantize form. With tuned ranges, `details` gets
    how many of the tuned tensors this graph's observers found (`range_tuning`)."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgepack.exporters._keep_float import keep_modules_float

    keep_modules_float(quantizer, opts.keep_float, fmt)
    prepared = prepare_pt2e(captured, quantizer)
    with torch.no_grad():
        for batch in calibration[: 1 if dynamic else None]:
            prepared(*batch)
    if opts.tuned_ranges and not dynamic and details is not None:
        from edgepack.exporters._tuned_ranges import applied

        details["range_tuning"] = applied(prepared)
    return convert_pt2e(prepared, fold_quantize=fold_quantize)


def calibration_details(opts, *, dynamic: bool) -> dict:
    """The manifest's `calibration` entry: static int8 only (dynamic ranges are computed
    at run time from each input, with no calibration)."""
    if dynamic:
        return {}
    from edgepack.exporters._observers import describe

    return {"calibration": describe(opts)}


def as_tensor(x) -> "torch.Tensor":  # noqa: F821
    """A row-major copy in the array's own dtype (float inputs as float32, token ids as
    int64). Arrays sliced from numpy can carry strides such as (64, 1, 8, 1) on size-1
    dims; `is_contiguous()` accepts them, torch.export records them, and lowering then
    leaves an as_strided_copy behind that fails at run time."""
    import torch

    x = np.asarray(x)
    if x.dtype == np.float64:
        x = x.astype(np.float32)
    return torch.as_tensor(x).clone(memory_format=torch.contiguous_format)


def as_tensors(inputs) -> tuple:
    return tuple(as_tensor(x) for x in inputs)


def calibration_batches(calibration: tuple, size: int, *, whole: bool = False) -> list[tuple]:
    """Batches of `size` samples of every input; `whole`: only full batches."""
    n = len(calibration[0])
    stop = n - size + 1 if whole else n
    return [tuple(as_tensor(a[i : i + size]) for a in calibration) for i in range(0, stop, size)]


def fallback(fallbacks: list | None, step: str, taken: str, error: BaseException) -> None:
    """Record that `step` did not work as asked and `taken` was used instead (the details
    an exporter returns carry these as `fallbacks`; one entry per step)."""
    if fallbacks is None or any(f["step"] == step for f in fallbacks):
        return
    first = (str(error).strip().splitlines() or [""])[0][:300]
    fallbacks.append({"step": step, "taken": taken, "reason": f"{type(error).__name__}: {first}"})


def fallback_details(fallbacks: list, calibration: np.ndarray, batches: list, *, dynamic: bool) -> dict:
    """`fallbacks` and, when a static capture left samples out of static calibration, the
    number calibrated on (dynamic ranges are computed at run time from no calibration)."""
    out = {"fallbacks": list(fallbacks)} if fallbacks else {}
    used = sum(len(b[0]) for b in batches)
    if not dynamic and used != len(calibration[0]):
        out["calibration_samples_used"] = int(used)
    return out


def capture_for_calibration(module, example: tuple, calibration: tuple, *, min_bound: int = 0, strict: bool = False,
                            fallbacks: list | None = None):
    """Capture `module` for PT2E and split the calibration set into batches it accepts.

    Preferably with a dynamic batch (calibration in batches of 32, traced at that size:
    a batch-1 trace specialises the dimension to the constant 1). A model that only takes
    its declared batch (a .pt2 program exported with static shapes) is captured as it is
    and calibrated in batches of that size.

    `strict=True` captures with TorchDynamo first, for quantizers that find ops by the
    Python call that produced them (`source_fn_stack`, which only a strict capture
    records); a model Dynamo cannot trace is then captured non-strictly. Each way out
    taken is appended to `fallbacks`."""
    import torch

    strict_failed: list[BaseException] = []  # of the latest capture: only the one kept is recorded

    def capture(args, shapes=None):
        strict_failed.clear()
        if strict:
            try:
                with _classes_importable(module):
                    return torch.export.export(module, args, dynamic_shapes=shapes, strict=True).module()
            except Exception as e:
                strict_failed.append(e)
        return torch.export.export(module, args, dynamic_shapes=shapes).module()

    # The capture's guards survive convert_pt2e: its batch bound must cover any dynamic
    # batch the artifact is exported with afterwards (`min_bound`).
    samples = len(calibration[0])
    size = max(2, min(CALIBRATION_BATCH, samples))
    bound = max(size, min_bound)
    if min_bound:
        # Traced exactly at the declared max: shape guards evaluated on a smaller trace
        # (torch's conv backend choice guards on batch >= 16) would narrow the range.
        bound, size = min_bound, min(size, min_bound)
    try:
        traced = tuple(x[:1].expand(bound, *x.shape[1:]).clone() for x in example)
        batch = torch.export.Dim("batch", min=1, max=bound)
        with _export_errors_unlogged():
            captured = capture(traced, tuple({0: batch} for _ in example))
        batches = calibration_batches(calibration, size)
        if strict_failed:
            fallback(fallbacks, "strict capture", "non-strict", strict_failed[0])
        return captured, batches
    except Exception as e:
        fallback(fallbacks, "batch capture", "static", e)
    captured = capture(example)
    size = example[0].shape[0]
    # Only whole batches fit a static model; at most size-1 samples are left out
    # (fallback_details reports how many were used).
    batches = calibration_batches(calibration, size, whole=True)
    if not batches:
        raise ValueError(f"the model takes batches of exactly {size} and there are only {samples} calibration samples")
    if strict_failed:
        fallback(fallbacks, "strict capture", "non-strict", strict_failed[0])
    return captured, batches


@contextmanager
def _export_errors_unlogged():
    """torch.export logs a failed export at ERROR level before raising it; a batch capture
    that fails is expected (a program exported at a static batch) and recorded as a
    fallback, so the log line would only be noise on the build's stderr."""
    import logging

    logger = logging.getLogger("torch.export._trace")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def _classes_importable(module):
    """Make the modules that define `module`'s classes importable by name while it is
    captured. Dynamo resolves a forward()'s globals by importing its `__module__`;
    project files are loaded from a path (sources.hooks) and are not in sys.modules, so
    a strict capture of them fails. Only missing names are added, as snapshots of the
    forward()'s own globals, and removed afterwards: two projects' `model.py` never see
    each other."""
    added = []
    for sub in module.modules():
        cls = type(sub)
        name = cls.__module__
        glob = getattr(getattr(cls, "forward", None), "__globals__", None)
        if name in sys.modules or glob is None or glob.get("__name__") != name:
            continue
        shim = types.ModuleType(name)
        shim.__dict__.update(glob)
        sys.modules[name] = shim
        added.append(name)
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)
