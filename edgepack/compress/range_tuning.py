"""Activation ranges chosen for what reaches the outputs, not for each tensor alone.

Every calibration method (minmax, percentile, entropy, mse) picks a tensor's int8 range
from that tensor's own values. What the outputs need can differ: on MobileNetV2 the
residual stream of the last blocks holds rare values several times larger than the rest,
which the 1x1 expansion and its ReLU6 that follow clamp anyway; the mse range keeps them
and rounds every other value coarsely, and halving that range raises the logit SNR that
tensor alone costs from 21.6 to 27.3 dB (samples/mobilenet_v2, 64 inputs). Scaling every
range by one factor makes things worse: the tensors differ.

So the ranges are tuned on the fake-quantized model (compress.switchable_int8), one
tensor at a time:

1. rank the activation tensors by the output SNR each costs alone (int8 weights, that
   one activation int8, the others float), on `RANK_SAMPLES` calibration inputs;
2. for the `TOP` most costly, in that order, with every tensor int8, try the calibrated
   range scaled by `NARROWER` factors in turn until the outputs get clearly worse (or by
   `WIDER` ones when narrowing loses at once), and keep the factor that gives the outputs
   the highest SNR against fp32 on `SEARCH_SAMPLES` calibration inputs (the current range
   unless another gains more than `MIN_GAIN_DB`).

Only calibration inputs are used: the evaluation split judges the result. Each candidate
re-runs the graph from the tensor being tuned onwards only (the values before it are
computed once per tensor), which is what makes this affordable: the most costly tensors
are mostly near the outputs.

This is range setting against the task output, as in the output-aware calibration of
Nagel et al., "A White Paper on Neural Network Quantization" (2021), section 4.2, done by
coordinate search because torchao's PT2E observers and onnxruntime's calibrators only see
one tensor at a time. The chosen factors reach each format's own calibration through
exporters._tuned_ranges.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

# Tried from the calibrated range down while the outputs keep improving (the SNR rises
# then falls as a range narrows); a wider range only when narrowing it loses at once.
NARROWER = (0.7, 0.5, 0.35, 0.25, 0.18)
WIDER = (1.3,)
# Narrowing stops once the outputs are this much worse than the best range so far (the
# SNR is not quite unimodal in the factor on a few dozen inputs).
GIVE_UP_DB = 1.0
TOP = 20
RANK_SAMPLES = 16
SEARCH_SAMPLES = 32
MIN_GAIN_DB = 0.05
# The graph runs on this many inputs at a time: the values kept before a tuned tensor are
# kept per chunk, and small chunks keep activations in the caches (compress.evaluate.batch_size).
CHUNK = 8

METHOD = ("output-aware range tuning: the activations that cost the outputs most, one at a time, "
          f"calibrated range x {'/'.join(str(f) for f in NARROWER + WIDER)}, kept when the fake-quantized "
          "model's output SNR vs fp32 on calibration inputs rises")


@dataclass(frozen=True)
class TunedTensor:
    node: str               # the tensor's node in the torch graph (for people; formats match fingerprints)
    fingerprint: object     # exporters._tuned_ranges.Fingerprint
    factor: float
    alone_snr_db: float     # output SNR with only this activation int8 (and the weights)


@dataclass(frozen=True)
class RangeTuning:
    tuned: tuple[TunedTensor, ...]     # the tensors whose range changed
    candidates: int                    # activation tensors ranked
    searched: int                      # of those, how many were tried
    samples: int
    snr_before_db: float | None        # every tensor int8, on the search inputs
    snr_after_db: float | None
    seconds: float

    def entries(self):
        from edgepack.exporters._tuned_ranges import as_entries

        return as_entries({t.fingerprint: t.factor for t in self.tuned})

    def as_dict(self) -> dict:
        return {"method": METHOD, "activations": self.candidates, "searched": self.searched,
                "samples": self.samples, "snr_before_db": _round(self.snr_before_db),
                "snr_after_db": _round(self.snr_after_db), "seconds": round(self.seconds, 2),
                "tuned": [{"tensor": t.node, "factor": t.factor, "alone_snr_db": _round(t.alone_snr_db)}
                          for t in self.tuned]}


def _round(v):
    return None if v is None or not math.isfinite(v) else round(v, 2)


def _snr(reference: np.ndarray, output: np.ndarray) -> float:
    from edgepack.verify.metrics import snr_db

    return float(snr_db(reference, output))


def tune(switchable, x: np.ndarray, reference: np.ndarray, *, progress=None) -> RangeTuning:
    """Tune `switchable`'s activation ranges in place (left with every tensor int8 and
    the chosen factors applied) on calibration inputs `x` against the fp32 outputs
    `reference` (the first output); returns what was chosen."""
    import torch

    started = time.perf_counter()
    runner = _Chunked(_Partial(switchable.graph_module), CHUNK)
    groups = _same_tensor_groups(switchable)
    rank_x, rank_ref = x[:RANK_SAMPLES], reference[:RANK_SAMPLES]
    search_x, search_ref = x[:SEARCH_SAMPLES], reference[:SEARCH_SAMPLES]

    def scale(group, factor):
        for name in group:
            switchable.scale_range(name, factor)

    with torch.no_grad():
        switchable.enable_activations(())
        alone = {}
        baseline = runner.values(rank_x)   # weights int8, every activation float
        for i, group in enumerate(groups):
            switchable.enable_activations(group)
            alone[group[0]] = _snr(rank_ref, runner.resume(baseline, runner.first(group)))
            if progress and (i + 1) % 20 == 0:
                progress(f"range tuning: ranked {i + 1}/{len(groups)} activations")
        del baseline
        switchable.enable_activations(None)
        ranked = sorted(groups, key=lambda g: alone[g[0]])[:TOP]
        current = before = _snr(search_ref, runner.run(search_x))
        tuned = []
        for i, group in enumerate(ranked):
            start = runner.first(group)
            before_tensor = runner.values(search_x, stop=start)
            best, best_factor = current, 1.0

            def attempt(factor: float) -> float:
                scale(group, factor)
                return _snr(search_ref, runner.resume(before_tensor, start))

            for factors in (NARROWER, WIDER):
                for factor in factors:
                    snr = attempt(factor)
                    if snr > best + MIN_GAIN_DB:
                        best, best_factor = snr, factor
                    if snr < best - GIVE_UP_DB:
                        break
                if best_factor != 1.0:
                    break
            scale(group, best_factor)
            if best_factor != 1.0:
                current = best
                tuned.append(TunedTensor(runner.producer_of(group[0]), switchable.activations[group[0]][4], best_factor,
                                         alone[group[0]]))
            if progress and (i + 1) % 5 == 0:
                progress(f"range tuning: {i + 1}/{len(ranked)} tensors searched, output SNR {current:.1f} dB")
    return RangeTuning(tuple(tuned), len(groups), len(ranked), len(search_x), before, current,
                       time.perf_counter() - started)


def _same_tensor_groups(switchable) -> list[list[str]]:
    """The activation switches grouped by the tensor they quantize: a tensor observed
    twice (a mean's output, and the Linear's input after it) has two switches with one
    fingerprint, and every format scales both, so they are tuned together."""
    groups: list[tuple[object, list[str]]] = []
    for name, (*_, fp) in switchable.activations.items():
        if fp is None:
            continue
        for first, members in groups:
            if first.distance(fp) is not None:
                members.append(name)
                break
        else:
            groups.append((fp, [name]))
    return [members for _, members in groups]


class _Chunked:
    """A _Partial run on `size` inputs at a time: `values` keeps each chunk's own, so
    whatever a graph computes from its batch size stays that chunk's."""

    def __init__(self, partial, size: int):
        self.partial, self.size = partial, size

    def __getattr__(self, name):   # first, producer_of: the graph's, not the inputs'
        return getattr(self.partial, name)

    def _chunks(self, x: np.ndarray):
        return [x[i : i + self.size] for i in range(0, len(x), self.size)]

    def run(self, x: np.ndarray):
        return np.concatenate([self.partial.run(c) for c in self._chunks(x)])

    def values(self, x: np.ndarray, stop: str | None = None) -> list[dict]:
        return [self.partial.values(c, stop) for c in self._chunks(x)]

    def resume(self, envs: list[dict], switch: str):
        return np.concatenate([self.partial.resume(env, switch) for env in envs])


class _Partial:
    """Runs a GraphModule whole, up to a node, or on from a node given the values
    computed before it. Written here because torch.fx.Interpreter runs a graph from its
    placeholders only."""

    def __init__(self, gm):
        import torch.fx

        self.gm = gm
        self.nodes = list(gm.graph.nodes)
        self.index = {n.name: i for i, n in enumerate(self.nodes)}
        self.by_target = {n.target: n for n in self.nodes if n.op == "call_module"}
        self.last_use = {}
        for i, n in enumerate(self.nodes):
            for a in n.all_input_nodes:
                self.last_use[a.name] = i
        self.interpreter = torch.fx.Interpreter(gm)

    def first(self, switches) -> str:
        """Of several switches, the one the graph reaches first."""
        return min(switches, key=self._start)

    def producer_of(self, switch: str) -> str:
        node = self.by_target[switch]
        return node.args[0].name if node.args else node.name

    def _start(self, switch: str) -> int:
        return self.index[self.by_target[switch].name]

    def run(self, x: np.ndarray):
        return self._execute({}, 0, x)

    def values(self, x: np.ndarray, stop: str | None = None) -> dict:
        """The values computed before the switch `stop` that later nodes use (all of them
        when `stop` is None), on input `x`."""
        end = len(self.nodes) - 1 if stop is None else self._start(stop)
        env = self._execute({}, 0, x, end=end, keep_all=stop is None)
        env["__input__"] = x
        return env

    def resume(self, env: dict, switch: str):
        """The outputs when the graph runs on from the switch `switch`, with the values
        before it taken from `env` (from `values`)."""
        start = self._start(switch)
        kept = {k: v for k, v in env.items() if k != "__input__" and (k not in self.index or self.index[k] < start)}
        return self._execute(kept, start, env["__input__"])

    def _execute(self, env: dict, start: int, x: np.ndarray, *, end: int | None = None, keep_all: bool = False):
        import torch

        from edgepack.exporters._pt2e import as_tensor

        interp = self.interpreter
        interp.env = {self.nodes[self.index[k]]: v for k, v in env.items()}
        stop = len(self.nodes) if end is None else end
        for i in range(start, stop):
            node = self.nodes[i]
            if node.op == "placeholder":
                interp.env[node] = as_tensor(x)
                continue
            if node.op == "output":
                out = interp.fetch_args_kwargs_from_env(node)[0][0]
                while isinstance(out, (tuple, list)):
                    out = out[0]
                interp.env = {}
                return out.detach().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
            interp.env[node] = interp.run_node(node)
            if not keep_all:
                for a in node.all_input_nodes:   # free what no later node needs
                    if self.last_use.get(a.name, -1) <= i and a in interp.env and a.op != "placeholder":
                        del interp.env[a]
        kept = {n.name: v for n, v in interp.env.items()
                if keep_all or self.last_use.get(n.name, -1) >= stop}
        interp.env = {}
        return kept
