"""The project's own code (model factory, data hooks, the model's forward) cannot fake
success: exiting, raising a BaseException or KeyboardInterrupt is exit 2 with one line
naming where, and nothing is built."""

from __future__ import annotations

import pytest

from conftest import assert_one_line_error, cli

HOOKS = '''

class Custom(BaseException):
    pass


def exits_zero():
    import sys
    sys.exit(0)


def exits_none():
    raise SystemExit


def interrupts_itself():
    raise KeyboardInterrupt


def generator_exit():
    raise GeneratorExit("closed")


def custom_base_exception():
    raise Custom("custom base exception")
'''

FORWARDS = '''

class ExitsOnBatches(Tiny):
    """Passes the one-sample check, exits on the evaluation batch."""

    def forward(self, x):
        if x.shape[0] > 1:
            import sys
            sys.exit(0)
        return super().forward(x)


class ExitsWhenExported(Tiny):
    def forward(self, x):
        if torch.compiler.is_exporting():
            import sys
            sys.exit(0)
        return super().forward(x)


class CustomWhenExported(Tiny):
    def forward(self, x):
        if torch.compiler.is_exporting():
            raise Custom("raised while exported")
        return super().forward(x)


class InterruptsOnBatches(Tiny):
    def forward(self, x):
        if x.shape[0] > 1:
            raise KeyboardInterrupt
        return super().forward(x)


class ExitsAlways(Tiny):
    def forward(self, x):
        import sys
        sys.exit(0)


def exits_on_batches():
    return ExitsOnBatches()


def exits_when_exported():
    return ExitsWhenExported()


def custom_when_exported():
    return CustomWhenExported()


def interrupts_on_batches():
    return InterruptsOnBatches()


def exits_always():
    return ExitsAlways()
'''


def _project(project, *, factory: str | None = None, evaluation: str | None = None, module_tail: str = ""):
    (project.root / "data.py").write_text((project.root / "data.py").read_text() + HOOKS)
    (project.root / "model.py").write_text((project.root / "model.py").read_text() + HOOKS + FORWARDS + module_tail)
    text = (project.root / "edgepack.toml").read_text()
    if factory:
        text = text.replace("model.py:build", f"model.py:{factory}")
    if evaluation:
        text = text.replace("data.py:evaluation", f"data.py:{evaluation}")
    project.write_toml(text)


def _assert_failed_without_output(run, project, *fragments):
    assert_one_line_error(run, 2, *fragments)
    assert not (project.root / "dist").exists()


@pytest.mark.parametrize("hook, fragments", [
    ("exits_zero", ["called sys.exit(0)"]),
    ("exits_none", ["called sys.exit(None)"]),
    ("interrupts_itself", ["raised KeyboardInterrupt"]),
    ("generator_exit", ["raised GeneratorExit: closed"]),
    ("custom_base_exception", ["raised Custom: custom base exception"]),
])
def test_call_hook_data_hook_exiting_or_raising_base_exception_exits_2(tiny_project, hook, fragments):
    _project(tiny_project, evaluation=hook)
    run = cli("build", "-p", tiny_project.root)
    _assert_failed_without_output(run, tiny_project, f"data.evaluation hook 'data.py:{hook}'", "(data.py:", *fragments)


@pytest.mark.parametrize("hook, fragments", [
    ("exits_zero", ["called sys.exit(0)"]),
    ("interrupts_itself", ["raised KeyboardInterrupt"]),
    ("custom_base_exception", ["raised Custom: custom base exception"]),
])
def test_call_hook_factory_exiting_or_raising_base_exception_exits_2(tiny_project, hook, fragments):
    _project(tiny_project, factory=hook)
    run = cli("build", "-p", tiny_project.root)
    _assert_failed_without_output(run, tiny_project, f"model.factory 'model.py:{hook}'", "(model.py:", *fragments)


def test_resolve_hook_module_exiting_on_import_exits_2(tiny_project):
    _project(tiny_project, module_tail="\nimport sys\nsys.exit(0)\n")
    run = cli("build", "-p", tiny_project.root)
    _assert_failed_without_output(run, tiny_project, "importing model.py failed", "sys.exit(0)")


def test_check_forward_exiting_exits_2(tiny_project):
    _project(tiny_project, factory="exits_always")
    run = cli("build", "-p", tiny_project.root)
    _assert_failed_without_output(run, tiny_project, "the model's forward (model.py:", "called sys.exit(0)")


@pytest.mark.slow  # the later ones run the exporter up to the failing forward
@pytest.mark.parametrize("factory, fragments", [
    ("exits_on_batches", ["the project's code (model.py:", "in forward) called sys.exit(0)"]),
    ("interrupts_on_batches", ["the project's code (model.py:", "in forward) raised KeyboardInterrupt"]),
    ("exits_when_exported", ["the project's code (model.py:", "in forward) called sys.exit(0)"]),
    ("custom_when_exported", ["the project's code (model.py:", "in forward) raised Custom: raised while exported"]),
])
def test_run_guarded_forward_exiting_later_in_the_build_exits_2(tiny_project, factory, fragments):
    _project(tiny_project, factory=factory)
    run = cli("build", "-p", tiny_project.root)
    _assert_failed_without_output(run, tiny_project, *fragments)


def test_run_guarded_verbose_shows_the_traceback_of_project_code(tiny_project):
    _project(tiny_project, evaluation="exits_zero")
    run = cli("build", "-p", tiny_project.root, "-v")
    assert run.code == 2, run.stderr
    assert "Traceback" in run.stderr and "data.py" in run.stderr


def test_run_guarded_json_reports_project_code_failure_as_a_document(tiny_project):
    _project(tiny_project, evaluation="exits_zero")
    run = cli("build", "-p", tiny_project.root, "--json")
    assert run.code == 2
    doc = run.json()
    assert doc["ok"] is False and doc["exit_code"] == 2 and "sys.exit(0)" in doc["error"]
