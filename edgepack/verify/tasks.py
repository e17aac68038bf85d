"""What a model is scored by, per task: the metrics computed on its outputs (by output
name) and labels, the project's own metric hook, and which budgets apply to the task.

Outputs travel as an ordered mapping, output name -> array with the samples first, in
declared order (edgepack.modelio gives them as a tuple in that order); a model with one
output is a mapping of one entry, named by `model.output_name`. The task's own metrics
read the first output; the metric hook gets them all; parity covers each by name."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from edgepack.errors import ConfigError

# Budgets every task is gated on, and those only one task can be.
COMMON_BUDGETS = ("min_snr_db", "outputs", "gated_metric", "metric_direction", "max_metric_drop",
                  "max_size_bytes", "max_latency_ms")
TASK_BUDGETS: dict[str, tuple[str, ...]] = {
    "classification": ("max_accuracy_drop_pt", "min_agreement_pct"),
    "regression": (),
    "embedding": ("min_cosine",),
    "none": (),
}

# The built-in metrics of each task and which way is better. Classification's top-k is
# named with its k (top5_accuracy); embeddings are scored against the fp32 model, so
# their metrics are parity and need no labels.
BUILTIN_DIRECTIONS: dict[str, str] = {"accuracy": "higher", "mae": "lower", "rmse": "lower",
                                      "cosine_mean": "higher", "cosine_min": "higher"}
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "top<k>_accuracy"),
    "regression": ("mae", "rmse"),
    "embedding": ("cosine_mean", "cosine_min"),
    "none": (),
}
# What a table or card shows as a task's score, when no gated_metric says otherwise.
HEADLINE_METRIC = {"classification": "accuracy", "regression": "mae", "embedding": "cosine_min"}


def output_names(project) -> tuple[str, ...]:
    """The model's output names, in declared order (config.schema.ModelSource.output_names:
    the `[[model.outputs]]`, or the one `model.output_name`)."""
    return project.model.output_names


def as_outputs(names: tuple[str, ...], value: Any) -> dict[str, np.ndarray]:
    """Outputs by name from what a model or runtime returned: a mapping (kept, in the
    declared order), a tuple or list (zipped with the names) or one array."""
    if isinstance(value, Mapping):
        return {n: np.asarray(value[n]) for n in names if n in value} or {k: np.asarray(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        if len(value) != len(names):
            raise ValueError(f"{len(value)} outputs for {len(names)} output names ({', '.join(names)})")
        return {n: np.asarray(v) for n, v in zip(names, value)}
    return {names[0]: np.asarray(value)}


def metric_direction(name: str) -> str | None:
    """'higher' or 'lower' for a built-in metric name, else None (a hook's metric)."""
    if name.startswith("top") and name.endswith("_accuracy") and name[3:-9].isdigit():
        return "higher"
    return BUILTIN_DIRECTIONS.get(name)


def default_top_k(classes: int | None) -> int | None:
    return 5 if classes is not None and classes >= 10 else None


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(len(a), -1).astype(np.float64)


def cosine_similarities(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Per sample, the cosine of the angle between the two embeddings (1: same direction).
    Two zero vectors count as identical, a zero against a non-zero one as orthogonal."""
    ref, out = _flat(reference), _flat(output)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    dots = np.sum(ref * out, axis=1)
    both_zero = (np.linalg.norm(ref, axis=1) == 0) & (np.linalg.norm(out, axis=1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    return np.clip(np.where(both_zero, 1.0, cos), -1.0, 1.0)


@dataclass(frozen=True)
class Scorer:
    """Scores one model's outputs: the task's own metrics and the project's metric hook.

    `hook(outputs, labels)` is data.metric, already resolved; it returns a dict of
    named numbers."""

    task: str
    names: tuple[str, ...]
    top_k: int | None = None
    hook: Callable[[dict, Any], Any] | None = None
    hook_spec: str = ""

    def directions(self) -> dict[str, str | None]:
        return {n: metric_direction(n) for n in self.builtin_names()}

    def builtin_names(self) -> tuple[str, ...]:
        if self.task == "classification":
            return ("accuracy",) + ((f"top{self.top_k}_accuracy",) if self.top_k else ())
        return TASK_METRICS[self.task]

    def score(self, outputs: dict[str, np.ndarray], labels, *, reference: dict[str, np.ndarray] | None = None) -> dict[str, float]:
        """The task's metrics (against labels, or for embeddings against `reference`; the
        reference model itself scores 1.0 there) and the hook's, in that order."""
        first = outputs[self.names[0]] if self.names[0] in outputs else next(iter(outputs.values()))
        metrics: dict[str, float] = {}
        if self.task == "classification" and labels is not None:
            logits = _flat(first)
            metrics["accuracy"] = float(np.mean(logits.argmax(1) == labels))
            if self.top_k:
                top = np.argpartition(-logits, self.top_k - 1, axis=1)[:, : self.top_k]
                metrics[f"top{self.top_k}_accuracy"] = float(np.mean(np.any(top == labels[:, None], axis=1)))
        elif self.task == "regression" and labels is not None:
            err = _flat(first) - labels.reshape(len(labels), -1).astype(np.float64)
            metrics["mae"] = float(np.mean(np.abs(err)))
            metrics["rmse"] = float(np.sqrt(np.mean(err**2)))
        elif self.task == "embedding":
            cos = cosine_similarities(first if reference is None else reference[self.names[0]], first)
            metrics["cosine_mean"], metrics["cosine_min"] = float(np.mean(cos)), float(np.min(cos))
        if self.hook is not None:
            metrics.update(self._call_hook(outputs, labels, taken=set(metrics)))
        return metrics

    def _call_hook(self, outputs: dict[str, np.ndarray], labels, *, taken: set[str]) -> dict[str, float]:
        what = f"data.metric hook {self.hook_spec!r}"
        # The hook gets its own copies: what it does to them cannot change what is gated.
        result = self.hook({k: v.copy() for k, v in outputs.items()}, None if labels is None else labels.copy())
        if not isinstance(result, Mapping) or not result:
            raise ConfigError(f"{what} returned {type(result).__name__}; expected a non-empty dict of named numbers, "
                              f"e.g. {{'mAP': 0.71}}")
        metrics = {}
        for name, value in result.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{what} returned the key {name!r}; metric names must be non-empty strings")
            if name in taken:
                raise ConfigError(f"{what} returned {name!r}, a name of the {self.task} task's own metrics "
                                  f"({', '.join(sorted(taken))}); name it otherwise")
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{what} returned {name!r} = {value!r}; expected a number") from None
            if not math.isfinite(number):
                raise ConfigError(f"{what} returned {name!r} = {number}; every metric must be finite")
            metrics[name] = number
        return metrics


def make_scorer(project_dir: Path, project, *, classes: int | None) -> Scorer:
    """The build's scorer: the task, the output names, top-k's k (checked against the
    classes) and the resolved metric hook."""
    from edgepack.sources.hooks import call_hook

    data = project.data
    top_k = None
    if data.task == "classification":
        top_k = data.top_k if data.top_k is not None else default_top_k(classes)
        if top_k is not None and classes is not None and top_k >= classes:
            raise ConfigError(f"edgepack.toml: data.top_k = {top_k}: the model outputs {classes} classes; "
                              f"top-k needs k below that (2 to {classes - 1})")
    hook = None
    if data.metric:
        spec = data.metric

        def hook(outputs, labels):
            return call_hook(project_dir, spec, outputs, labels, what="data.metric hook")
    return Scorer(task=data.task, names=output_names(project), top_k=top_k, hook=hook, hook_spec=data.metric or "")


def check_gated_metric(scorer: Scorer, budgets, reference_metrics: dict[str, float], *, where: str) -> None:
    """A gated metric must be one the scorer produced, with a direction: the task's own
    (known) or the hook's (declared with metric_direction)."""
    name = budgets.gated_metric
    if name is None:
        return
    if name not in reference_metrics:
        got = ", ".join(reference_metrics) or "none"
        source = f"the task's and the data.metric hook's ({scorer.hook_spec})" if scorer.hook else f"task {scorer.task!r}'s"
        raise ConfigError(f"{where}: budgets.gated_metric {name!r} is not among {source} metrics: {got}")


def budget_problems(project, overrides, *, where: str) -> list[str]:
    """The project's own budgets that its task cannot be gated on, a gated metric that
    cannot exist for it, and per-output budgets naming outputs the model does not have."""
    task = project.data.task
    applies = (*TASK_BUDGETS[task], *COMMON_BUDGETS)
    problems = []
    wrong = [name for name in overrides.given() if name not in applies]
    if wrong:
        problems.append(f"{where}: budgets {', '.join(wrong)} do not apply to task {task!r}; "
                        f"budgets that apply: {', '.join(applies)}")
    names = output_names(project)
    for out in overrides.outputs:
        if out not in names:
            problems.append(f"{where}: budgets.outputs.{out}: the model has no output {out!r}; outputs: {', '.join(names)}")
    problems.extend(gated_metric_problems(project, overrides, where=where))
    return problems


def gated_metric_problems(project, budgets, *, where: str) -> list[str]:
    name, direction = budgets.gated_metric, budgets.metric_direction
    if name is None:
        return []
    task = project.data.task
    known = metric_direction(name)
    own = list(TASK_METRICS[task])
    is_own = name in own or (task == "classification" and known == "higher" and name.endswith("_accuracy"))
    if known is not None and not is_own:
        return [f"{where}: budgets.gated_metric {name!r} is not a metric of task {task!r}; its metrics: "
                f"{', '.join(own) or 'none'}" + ("" if project.data.metric else "; or declare data.metric")]
    if known is not None:
        if direction is not None and direction != known:
            return [f"{where}: budgets.metric_direction {direction!r}: {name} is better {known}"]
        return []
    if not project.data.metric:
        return [f"{where}: budgets.gated_metric {name!r} is not a metric of task {task!r} "
                f"({', '.join(own) or 'none'}) and no data.metric hook is declared to compute it"]
    if direction is None:
        return [f"{where}: budgets.gated_metric {name!r} needs metric_direction = \"higher\" or \"lower\" "
                f"(which way is better)"]
    return []
