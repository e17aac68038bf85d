"""Why a stage lost accuracy, in one sentence a user can act on.

A stage "collapses" when it keeps less than half of its input's margin over chance, and
falls "to chance" when it keeps under a tenth of it. Chance is what always answering the
most common class of the evaluation labels scores, which is what a collapsed classifier
does. The likely cause comes from what the pass measured in its report: for pruning the
accuracy right after pruning and after fine-tuning tell whether pruning removed too much
or the fine-tuning made it worse, and a non-finite loss says the fine-tuning diverged.
"""

from __future__ import annotations

import math

import numpy as np

# Shares of the input's margin over chance below which a stage is said to have collapsed.
LOST_HALF = 0.5
NEAR_CHANCE = 0.1
# A model within this many points of chance has no accuracy to lose: nothing to explain.
MIN_MARGIN = 0.05


def chance_accuracy(labels: np.ndarray) -> float:
    """Accuracy of always answering the most common label."""
    labels = np.asarray(labels)
    if labels.size == 0 or labels.min() < 0:  # no class indices: no chance level to speak of
        return 0.0
    return float(np.bincount(labels.astype(np.int64)).max() / labels.size)


def _kept(before: float, after: float, chance: float) -> float | None:
    """The share of `before`'s margin over chance that `after` keeps (None: no margin)."""
    margin = before - chance
    return None if margin < MIN_MARGIN else (after - chance) / margin


def collapsed(*, before: float, after: float, chance: float) -> bool:
    kept = _kept(before, after, chance)
    return kept is not None and kept < LOST_HALF


def explain(pass_name: str, report: dict, *, before: float, after: float, chance: float) -> str | None:
    """A sentence on the collapse and its likely cause, or None when the stage kept more
    than half of its input's margin over chance."""
    if not collapsed(before=before, after=after, chance=chance):
        return None
    if _kept(before, after, chance) <= NEAR_CHANCE:
        head = f"accuracy fell to chance ({_pct(after)}; always answering the most common class scores {_pct(chance)})"
    else:
        head = f"accuracy fell from {_pct(before)} to {_pct(after)} (chance is {_pct(chance)})"
    cause = _CAUSES.get(pass_name, _other)(report or {}, before, after)
    return f"{head} {cause}"


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def _diverged(log: dict) -> bool:
    return any(not math.isfinite(v) for v in log.get("loss_per_epoch") or ())


def _training(log: dict, epochs_word: str = "epochs") -> str:
    samples = f" on {log['samples']} samples" if log.get("samples") else ""
    return f"{log.get('epochs', '?')} {epochs_word}{samples}"


def _rate(log: dict) -> str:
    if not log.get("learning_rate"):
        return ""
    return f" at learning_rate {log['learning_rate']:g}" + (f" ({log['optimizer']})" if log.get("optimizer") else "")


def _prune(report: dict, before: float, after: float) -> str:
    share = f"{report['ratio'] * 100:g}%" if isinstance(report.get("ratio"), (int, float)) else "a share"
    what = f"after pruning {share} of " + ("each layer's channels" if report.get("method") == "structured"
                                            else "the weights")
    log = report.get("fine_tune")
    if not log:
        return (f"{what} without fine-tuning: try a lower ratio, fine_tune_epochs > 0, or a distill stage "
                "after it")
    if _diverged(log):
        return (f"{what}: fine-tuning diverged (loss {log['loss_per_epoch'][-1]}){_rate(log)}; "
                "try a lower learning_rate")
    pruned = report.get("validation_accuracy_after_pruning")
    tuning = f"fine-tuning {_training(log)}"
    if isinstance(pruned, (int, float)) and pruned - after >= LOST_HALF * (before - after):
        return (f"{what}: right after pruning it scored {_pct(pruned)}, and {tuning}{_rate(log)} brought it down "
                f"to {_pct(after)}; try a lower learning_rate, more training samples, or fine_tune_epochs = 0 "
                "and a distill stage after it")
    right_after = f" ({_pct(pruned)} right after pruning)" if isinstance(pruned, (int, float)) else ""
    return (f"{what}: {tuning} did not recover it{right_after}; try a lower ratio, more fine_tune_epochs, "
            "or a distill stage after it")


def _distill(report: dict, before: float, after: float) -> str:
    log = report.get("training") or {}
    if _diverged(log):
        return f"during distillation: training diverged (loss {log['loss_per_epoch'][-1]}){_rate(log)}; " \
               "try a lower learning_rate"
    teachers = [t.get("validation_accuracy") for t in report.get("teachers") or ()]
    weak = [t for t in teachers if isinstance(t, (int, float)) and t < before]
    hint = "; its teachers score less than the model did" if weak and len(weak) == len(teachers) else ""
    return (f"after distilling {_training(log)}{_rate(log)}{hint}: try more epochs, a lower learning_rate, a "
            "stronger teacher, or a larger student")


def _cluster(report: dict, before: float, after: float) -> str:
    bits = report.get("bits")
    values = f"{2 ** bits} shared values per layer ({bits} bits)" if isinstance(bits, int) else "weight sharing"
    log = report.get("fine_tune")
    tuned = f", fine-tuned {_training(log)}" if log else ", without fine-tuning"
    return (f"after {values}{tuned}: try more bits, fine_tune_epochs, or skip_layers for the layers that "
            "matter most (the first and the last)")


def _other(report: dict, before: float, after: float) -> str:
    return "in this stage"


_CAUSES = {"prune": _prune, "distill": _distill, "cluster": _cluster}
