"""Loading the source PyTorch model without ever unpickling a user's file.

Two forms: a factory (`model.py:build`) plus safetensors weights, or a `torch.export`
program (`.pt2`). torch.export.load falls back to full unpickling for some archive
members, so a .pt2 is inspected first and rejected if any member would need it.
TorchScript, which torch.export cannot capture, is recognised wherever it is given and
refused with what to give instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgepack.config.schema import Project
from edgepack.errors import ConfigError
from edgepack.sources.hooks import call_hook, is_real_interrupt, user_code_error

PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


@dataclass(frozen=True)
class SourceModel:
    module: "torch.nn.Module"  # noqa: F821  (torch is imported lazily; a sources.foreign.ForeignModel otherwise)
    sha256: str
    path: Path
    parameters: int
    fp32_bytes: int
    kind: str = "pytorch"      # config.schema.ModelSource.kind


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# What to do with a TorchScript model: edgepack exports through torch.export only.
TORCHSCRIPT_HINT = ("edgepack cannot export TorchScript; export the nn.Module with torch.export "
                    "(torch.export.save(torch.export.export(model, (example,)), 'model.pt2')) and set model.program, "
                    "or give the factory that builds the nn.Module (model.factory + .safetensors weights)")


def is_torchscript_archive(path: Path) -> bool:
    """A torch.jit.save file, recognised by its zip layout (`<name>/constants.pkl` next to
    `<name>/code/`) without unpickling anything."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _check_not_torchscript(module, what: str, factory: str) -> None:
    import torch

    found = next(((name, m) for name, m in module.named_modules() if isinstance(m, torch.jit.ScriptModule)), None)
    if found is not None:
        name, _ = found
        where = "a TorchScript module" if not name else f"a model holding TorchScript module {name!r}"
        raise ConfigError(f"{what} {factory!r} returned {where} ({TORCHSCRIPT_HINT})")


def _describe_non_safetensors(path: Path) -> str | None:
    head = path.read_bytes()[:8]
    if head.startswith(b"PK"):
        return "a zip archive (torch.save format, which unpickles on load)"
    if head[:2] in PICKLE_MAGIC:
        return "a Python pickle"
    return None


def load_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if is_torchscript_archive(path):
        raise ConfigError(f"{path}: is a TorchScript archive (torch.jit.save), not safetensors weights; {TORCHSCRIPT_HINT}")
    kind = _describe_non_safetensors(path)
    if kind:
        raise ConfigError(
            f"{path}: is {kind}; edgepack never unpickles user files. Convert it once, in "
            "your own environment: safetensors.torch.save_file(torch.load(p, weights_only=True), 'model.safetensors')"
        )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a readable safetensors file: {e}") from None


def _check_state_dict(module, state: dict, path: Path) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k} {list(state[k].shape)} (model wants {list(expected[k].shape)})"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
    if wrong:
        problems.append(f"shape mismatch: {', '.join(wrong[:5])}{' ...' if len(wrong) > 5 else ''}")
    if problems:
        raise ConfigError(f"{path}: weights do not match the model the factory builds: {'; '.join(problems)}")


def _check_pt2_safe(path: Path) -> None:
    """Refuse a .pt2 whose loading would need unrestricted unpickling."""
    import torch

    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ConfigError(f"{path}: not a torch.export .pt2 archive: {e}") from None
    with archive:
        names = archive.namelist()
        if is_torchscript_archive(path):
            raise ConfigError(f"{path}: is a TorchScript archive (torch.jit.save), not a torch.export program; {TORCHSCRIPT_HINT}")
        if not any("/models/" in n and n.endswith(".json") for n in names):
            raise ConfigError(f"{path}: not a torch.export .pt2 archive (no models/*.json); save one with torch.export.save")
        for name in names:
            if name.endswith(("_weights_config.json", "_constants_config.json")):
                config = json.loads(archive.read(name)).get("config", {})
                for fqn, meta in config.items():
                    if meta.get("use_pickle") or str(meta.get("path_name", "")).startswith(("custom_obj", "opaque_obj")):
                        raise ConfigError(f"{path}: member {fqn!r} is stored as a pickle; edgepack loads only plain tensors")
            elif name.endswith(".pt") and "/sample_inputs/" in name:
                try:
                    torch.load(io.BytesIO(archive.read(name)), weights_only=True)
                except Exception:
                    raise ConfigError(f"{path}: sample inputs need unrestricted unpickling; re-export with plain tensor inputs") from None
            elif name.endswith((".pt", ".pkl")):
                raise ConfigError(f"{path}: legacy member {name.split('/', 1)[-1]} would be unpickled; re-save with a current torch.export.save")


def build_untrained(project_dir: Path, factory: str, *, what: str):
    """Call a factory and check it returns a module (weights not loaded)."""
    import torch

    module = call_hook(project_dir, factory, what=what)
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"{what} {factory!r} returned {type(module).__name__}; it must return a torch.nn.Module")
    _check_not_torchscript(module, what, factory)
    return module


def load_factory_model(project_dir: Path, factory: str, weights: Path, *, what: str):
    """A factory's model with safetensors weights loaded, in eval mode."""
    if not weights.is_file():
        raise ConfigError(f"{what}: weights {weights} not found")
    state = load_safetensors(weights)
    module = build_untrained(project_dir, factory, what=what)
    _check_state_dict(module, state, weights)
    module.load_state_dict(state, strict=True)
    return module.eval()


def _program_module(program):
    """The program as a module the rest of the build can treat like any other: in eval
    mode (batchnorm and dropout moved to their eval ops if it was exported in training
    mode), and accepting eval()/train(), which a bare `program.module()` refuses."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval, move_exported_model_to_eval

    module = allow_exported_model_train_eval(move_exported_model_to_eval(program.module()))
    module.training = False  # the flag converters read (LiteRT warns on a training-mode model)
    return module


def load_source(project_dir: Path, project: Project) -> SourceModel:
    import torch

    src = project.model
    if src.program:
        path = (project_dir / src.program).resolve()
        if not path.is_file():
            raise ConfigError(f"edgepack.toml: model.program: {path} not found")
        _check_pt2_safe(path)
        try:
            program = torch.export.load(str(path))
        except Exception as e:
            raise ConfigError(f"{path}: torch.export.load failed: {type(e).__name__}: {e}") from None
        module = _program_module(program)
        params = sum(int(v.numel()) for v in program.state_dict.values())
        nbytes = sum(int(v.numel() * v.element_size()) for v in program.state_dict.values())
        return SourceModel(module, sha256_file(path), path, params, nbytes)

    path = (project_dir / src.weights).resolve()
    if not path.is_file():
        raise ConfigError(f"edgepack.toml: model.weights: {path} not found")
    module = load_factory_model(project_dir, src.factory, path, what="model.factory")
    params = sum(p.numel() for p in module.parameters())
    nbytes = sum(t.numel() * t.element_size() for t in module.state_dict().values() if t.is_floating_point())
    return SourceModel(module, sha256_file(path), path, int(params), int(nbytes))


def _arity_problem(module, specs) -> str | None:
    """Why forward() cannot take the declared inputs by position, when its signature says so."""
    import inspect

    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    names = ", ".join(s.name for s in specs)
    if len(specs) > len(positional) or len(specs) < len(required):
        takes = ", ".join(p.name for p in positional) or "nothing"
        return (f"forward() takes ({takes}) but the project declares {len(specs)} input(s) ({names}); "
                "declare one [[model.inputs]] per forward() argument, in order")
    return None


def check_forward(source: SourceModel, project: Project) -> int | None:
    """Run the model once on zero inputs of the declared shapes and dtypes: a mismatch
    between the declared inputs and what forward() accepts, or between its outputs and
    the declared ones, fails here with a clear message before any export. Every output
    has the batch first; a classifier's first output is its logits [batch, classes].
    Returns the number of classes, which the labels are checked against (None for the
    other tasks)."""
    import torch

    from edgepack.modelio import example_inputs, output_tensors, to_torch

    model = project.model
    specs = model.input_specs
    several = len(specs) > 1
    problem = _arity_problem(source.module, specs)
    if problem:
        raise ConfigError(f"model.inputs: {problem}")
    shape = specs[0].shape
    try:
        with torch.no_grad():
            out = source.module(*to_torch(example_inputs(specs)))
    except BaseException as e:  # the forward is the project's code: sys.exit there is a failure too
        if is_real_interrupt(e):
            raise
        if not isinstance(e, Exception):
            raise user_code_error(e, what="the model's forward") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if several:
            described = ", ".join(f"{s.name} {list(s.shape)} {s.dtype}" for s in specs)
            raise ConfigError(f"model.inputs: the model fails on inputs of the declared shapes and dtypes "
                              f"({described}): {first}") from None
        raise ConfigError(f"model.input_shape {list(shape)}: the model fails on an input of that shape"
                          f"{'' if specs[0].dtype == 'float32' else ' and dtype ' + specs[0].dtype}: {first}") from None
    return check_outputs(output_tensors(out, model.output_names), project)


def check_outputs(outputs, project: Project) -> int | None:
    """The model's outputs on the declared example (tensors or arrays, in declared order):
    every output has the batch first; a classifier's first output is its logits [batch,
    classes]. Returns the number of classes (None for the other tasks)."""
    model = project.model
    shape = model.input_specs[0].shape
    task = project.data.task
    for spec_out, t in zip(model.output_names, outputs):
        if t.ndim == 0 or t.shape[0] != shape[0]:
            raise ConfigError(f"model output {spec_out!r} has shape {list(t.shape)}; a {task} model's outputs each "
                              f"have the batch first ([batch, ...], {shape[0]} as declared)")
    if task != "classification":
        # Values, embeddings or unlabelled outputs: any tensor with the batch first.
        return None
    first_out = outputs[0]
    if first_out.ndim != 2:
        raise ConfigError(f"model output is {list(first_out.shape)}; a classification model must return logits "
                          "[batch, classes] as its first output")
    if first_out.shape[1] < 1:
        raise ConfigError("model output is [batch, 0]; a classification model must return at least one class")
    return int(first_out.shape[1])


def load_foreign_source(project_dir: Path, project: Project) -> tuple[SourceModel, int | None]:
    """A Keras or ONNX source (sources.keras_model, sources.onnx_model), run once on zero
    inputs of the declared shapes, and the number of classes as check_forward gives it."""
    from edgepack.modelio import example_inputs

    kind = project.model.kind
    if kind == "keras":
        from edgepack.sources.keras_model import load_keras as load
    elif kind == "saved_model":
        from edgepack.sources.saved_model import load_saved_model as load
    else:
        from edgepack.sources.onnx_model import load_onnx as load
    model, path = load(project_dir, project)
    example = example_inputs(project.model.input_specs)
    try:
        outputs = model.run(example)
    except ConfigError:
        raise
    except Exception as e:  # the framework's own refusal of the declared inputs, any type
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        described = ", ".join(f"{s.name} {list(s.shape)} {s.dtype}" for s in project.model.input_specs)
        raise ConfigError(f"model.inputs: the {kind} model fails on inputs of the declared shapes and dtypes "
                          f"({described}): {type(e).__name__}: {first}") from None
    classes = check_outputs(outputs, project)
    weights = model.weights()
    source = SourceModel(model, model.sha256, path, int(sum(w.size for w in weights)),
                         int(sum(w.size * 4 for w in weights)), kind=kind)
    return source, classes
