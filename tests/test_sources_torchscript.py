"""A TorchScript model, in whichever place it is given, is recognised at load and refused
with one line saying what it is and what to give instead (exit 2); the file is
recognised by its zip layout, never unpickled."""

from __future__ import annotations

import importlib.util
import sys

from conftest import assert_one_line_error, cli

PROGRAM = 'program = "model.pt2"'
FACTORY = 'factory = "model.py:build"\nweights = "weights.safetensors"'

SCRIPTED_FACTORIES = '''

def build_scripted():
    return torch.jit.trace(build().eval(), torch.zeros(1, 1, 4, 4))


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = build_scripted()

    def forward(self, x):
        return self.inner(x)


def build_wrapped():
    return Wrapper()
'''


def _tiny_module(project):
    spec = importlib.util.spec_from_file_location("tiny_model_torchscript", project.root / "model.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # torch.jit.script reads the class's source through its module
    try:
        spec.loader.exec_module(mod)
        model = mod.build().eval()
    finally:
        sys.modules.pop(spec.name, None)
    return model


def _use(project, source: str) -> None:
    text = (project.root / "edgepack.toml").read_text()
    project.write_toml(text.replace(FACTORY, source))


def _assert_refused(run, *fragments):
    assert_one_line_error(run, 2, "TorchScript", "torch.export", "model.program", "model.factory", *fragments)


def test_torchscript_file_given_as_weights_is_refused(tiny_project):
    import torch

    torch.jit.save(torch.jit.trace(_tiny_module(tiny_project), torch.zeros(1, 1, 4, 4)),
                   str(tiny_project.root / "traced.pt"))
    _use(tiny_project, 'factory = "model.py:build"\nweights = "traced.pt"')
    _assert_refused(cli("build", "-p", tiny_project.root), "traced.pt", "torch.jit.save")
    assert not (tiny_project.root / "dist").exists()


def test_torchscript_file_given_as_program_is_refused(tiny_project):
    import torch

    torch.jit.save(torch.jit.script(_tiny_module(tiny_project)), str(tiny_project.root / "model.pt2"))
    _use(tiny_project, PROGRAM)
    _assert_refused(cli("build", "-p", tiny_project.root), "model.pt2", "not a torch.export program")


def test_factory_returning_a_script_module_is_refused(tiny_project):
    (tiny_project.root / "model.py").write_text((tiny_project.root / "model.py").read_text() + SCRIPTED_FACTORIES)
    _use(tiny_project, 'factory = "model.py:build_scripted"\nweights = "weights.safetensors"')
    _assert_refused(cli("build", "-p", tiny_project.root), "returned a TorchScript module")


def test_factory_returning_a_model_that_holds_a_script_module_is_refused(tiny_project):
    (tiny_project.root / "model.py").write_text((tiny_project.root / "model.py").read_text() + SCRIPTED_FACTORIES)
    _use(tiny_project, 'factory = "model.py:build_wrapped"\nweights = "weights.safetensors"')
    _assert_refused(cli("build", "-p", tiny_project.root), "TorchScript module 'inner'")


def test_torchscript_archive_is_recognised_without_unpickling(tmp_path, monkeypatch):
    import pickle

    import torch

    from edgepack.sources.pytorch import is_torchscript_archive

    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2)), str(scripted))
    state = tmp_path / "state.pt"
    torch.save({"w": torch.zeros(2)}, str(state))

    def refuse(*a, **k):
        raise AssertionError("unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(torch.jit, "load", refuse)
    assert is_torchscript_archive(scripted)
    assert not is_torchscript_archive(state)
