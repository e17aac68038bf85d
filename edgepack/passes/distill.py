"""Knowledge distillation, from one teacher or an ensemble of them.

The student learns from the teachers' temperature-softened class probabilities (KL at
temperature T, scaled by T^2 so its gradients keep their size as T changes; Hinton et al.
2015) plus the hard labels:

    loss = alpha * T^2 * KL(p_teacher || softmax(s / T)) + (1 - alpha) * CE(s, y)

Several teachers are combined into one target (soft voting): a weighted average of their
softened probabilities, or of their logits before softening.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from edgepack.errors import ConfigError, EdgepackError
from edgepack.passes import _inspect
from edgepack.passes.base import PassConfig, PassContext, PassResult
from edgepack.passes.training import (TrainingFields, accuracy, forward, predict_logits, require_training, torch_threads,
                                      train)

FACTORY_FORM = '"file.py:factory"'


def _check_factory(v: str) -> str:
    file, sep, func = v.partition(":")
    if not sep or not file.endswith(".py") or not func.isidentifier():
        raise ValueError(f"must read {FACTORY_FORM} (a Python file and a function in it)")
    return v


class TeacherRef(PassConfig):
    model: str = Field(description='"original" or "file.py:factory"')
    weights: str | None = None
    weight: float = Field(1.0, gt=0, description="share in the ensemble target (normalised)")

    @field_validator("model")
    @classmethod
    def _model_form(cls, v: str) -> str:
        return v if v == "original" else _check_factory(v)

    @property
    def label(self) -> str:
        return self.model if self.model == "original" else f"{self.model} ({self.weights})"


class StudentRef(PassConfig):
    model: str
    weights: str | None = Field(None, description="initial weights; omitted = the factory's init")

    @field_validator("model")
    @classmethod
    def _model_form(cls, v: str) -> str:
        return _check_factory(v)


class DistillConfig(TrainingFields):
    teachers: tuple[TeacherRef, ...] = Field((TeacherRef(model="original"),), min_length=1)
    combine: Literal["average_probs", "average_logits"] = "average_probs"
    temperature: float = Field(4.0, gt=0, le=100)
    alpha: float = Field(0.7, ge=0, le=1, description="weight of the soft (teacher) term")
    epochs: int = Field(10, ge=1)
    student: StudentRef | None = None

    def referenced_files(self) -> tuple[str, ...]:
        refs = [r for t in self.teachers if t.model != "original" for r in (t.model, t.weights) if r]
        if self.student is not None:
            refs += [r for r in (self.student.model, self.student.weights) if r]
        return tuple(refs)

    @field_validator("teachers", mode="before")
    @classmethod
    def _strings_are_original(cls, v):
        # A bare string is allowed only for the source model; any other teacher needs its
        # weights named, because a factory alone builds an untrained network.
        if not isinstance(v, (list, tuple)):
            return v
        out = []
        for i, t in enumerate(v):
            if isinstance(t, str):
                if t != "original":
                    raise ValueError(f'teachers[{i}] = {t!r}: write "original" or a table '
                                     f'{{model = {FACTORY_FORM}, weights = "x.safetensors", weight = 1.0}}')
                t = {"model": "original"}
            out.append(t)
        return out


def combine_teachers(logits: list, weights: list[float], temperature: float, mode: str):
    """The ensemble's soft target, [N, C] probabilities.

    average_probs:  sum_i w_i softmax(z_i / T)   (soft voting; weights normalised to sum 1)
    average_logits: softmax(sum_i w_i z_i / T)
    """
    import torch

    w = torch.tensor(weights, dtype=torch.float64)
    w = (w / w.sum()).tolist()
    if mode == "average_probs":
        return sum(wi * torch.softmax(z / temperature, dim=1) for wi, z in zip(w, logits))
    if mode == "average_logits":
        return torch.softmax(sum(wi * z for wi, z in zip(w, logits)) / temperature, dim=1)
    raise ValueError(f"combine must be average_probs or average_logits, not {mode!r}")


def distillation_loss(student_logits, target_probs, labels, *, temperature: float, alpha: float):
    import torch.nn.functional as F

    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1), target_probs,
                    reduction="batchmean") * temperature ** 2
    hard = F.cross_entropy(student_logits, labels)
    return alpha * soft + (1 - alpha) * hard


class Distill:
    name = "distill"
    Config = DistillConfig

    def run(self, model, config: DistillConfig, ctx: PassContext) -> PassResult:
        import copy

        import torch

        data = require_training(ctx, f"stage {self.name!r}")
        with torch_threads(ctx.threads):
            torch.manual_seed(ctx.seed)
            example = _inspect.example_tensor(ctx)
            if config.student is None:
                student = copy.deepcopy(model)
            else:
                student = _load(ctx, config.student.model, config.student.weights, "student")
            student.eval()
            with torch.no_grad():
                student_shape = tuple(forward(student, example).shape)
            teachers = []
            for i, ref in enumerate(config.teachers):
                teacher = _load(ctx, ref.model, ref.weights, f"teachers[{i}]").eval()
                with torch.no_grad():
                    shape = tuple(forward(teacher, example).shape)
                if shape != student_shape:
                    raise ConfigError(f"distill: teachers[{i}] ({ref.label}) outputs shape {list(shape)} but the "
                                      f"student outputs {list(student_shape)}; a teacher must predict the "
                                      "same classes as the student")
                teachers.append(teacher)

            weights = [t.weight for t in config.teachers]
            # Teachers are fixed and the data is not augmented, so their targets are computed
            # once instead of running every teacher on every batch of every epoch.
            target = combine_teachers([predict_logits(t, data.x) for t in teachers], weights,
                                      config.temperature, config.combine)
            val_logits = [predict_logits(t, ctx.validation.x) for t in teachers]
            ensemble_val = combine_teachers(val_logits, weights, 1.0, config.combine)
            val_y = torch.as_tensor(ctx.validation.y)
            teacher_report = [
                {"teacher": ref.label, "weight": ref.weight,
                 "validation_accuracy": float((z.argmax(1) == val_y).float().mean()),
                 "params": _inspect.count_params(t)}
                for ref, t, z in zip(config.teachers, teachers, val_logits)]
            before = accuracy(student, ctx.validation)

            def loss_fn(m, xb, yb, idx):
                return distillation_loss(forward(m, xb), target[idx], yb, temperature=config.temperature, alpha=config.alpha)

            log = train(student, data, epochs=config.epochs, settings=config, seed=ctx.seed,
                        loss_fn=loss_fn, progress=ctx.progress, label="distill")
            after = accuracy(student, ctx.validation)
        report = {
            "teachers": teacher_report,
            "combine": config.combine,
            "ensemble_validation_accuracy": float((ensemble_val.argmax(1) == val_y).float().mean()),
            "temperature": config.temperature,
            "alpha": config.alpha,
            "student": config.student.model if config.student else "current model",
            "student_params": _inspect.count_params(student),
            "student_validation_accuracy_before": before,
            "student_validation_accuracy_after": after,
            "training": log.as_dict(),
        }
        return PassResult(model=student.eval(), report=report)


def _load(ctx: PassContext, ref: str, weights: str | None, field: str):
    from torch import nn

    try:
        model = ctx.load_model(ref, weights)
    except EdgepackError as e:
        raise ConfigError(f"distill: {field} ({ref}): {e}") from e
    except Exception as e:  # a user's factory may raise anything; it is still bad input
        raise ConfigError(f"distill: {field} ({ref}) could not be loaded: {type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise ConfigError(f"distill: {field} ({ref}) is a {type(model).__name__}, not a torch.nn.Module")
    return model
