"""Running a matrix's step graph: serially, on a local process pool, or on Ray.

One scheduler (`run_graph`) for all three: it submits every step whose dependencies
succeeded while the executor has room, retries a failed or lost step up to the matrix's
`retries` (not a deterministic failure: bad input, a toolchain's refusal), marks the
steps after a failure as skipped and goes on with the rest. Ctrl-C cancels what is
running (locally: each step's process group; on Ray: its tasks) and leaves every dist
already written as it is (dists are swapped in by rename, caches written atomically).

Executors differ only in where a step's process runs:
  - local: `python -m edgepack.matrix.worker` children, at most `workers` at once
    (default: the cores, fewer when memory would not hold that many converters);
  - serial: the same with one worker;
  - ray: one Ray task per step (`max_calls=1`: a fresh worker process per step), with
    the step's memory and CPU as resource hints, on `ray.init(address)`; the projects'
    caches and the output folder must be on a filesystem every node sees.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgepack.interrupts import Interrupted
from edgepack.matrix.graph import MatrixPlan, Step


@dataclass
class StepState:
    step: Step
    status: str = "pending"        # pending | running | done | failed | skipped | cancelled
    attempts: int = 0
    seconds: float = 0.0
    result: dict | None = None
    errors: list[str] = field(default_factory=list)
    started: float = 0.0

    def as_dict(self) -> dict:
        return {"id": self.step.id, "kind": self.step.kind, "label": self.step.label, "status": self.status,
                "attempts": self.attempts, "seconds": round(self.seconds, 2), "errors": self.errors,
                "deps": list(self.step.deps), **({"result": self.result} if self.result is not None else {})}


def default_workers(memory_gb_per_step: float = 3.0) -> int:
    cores = os.cpu_count() or 1
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError):
        return cores
    return max(1, min(cores, int(memory_gb // memory_gb_per_step)))


def step_environment() -> dict[str, str]:
    """What every step's process gets, wherever it runs: torch's intra-op thread count of
    this (the driving) process. torch sums large tensors in per-thread partials, so the
    calibration observers' sums, hence the int8 scales and bytes, depend on the thread
    count (MobileNetV2: different .tflite/.pte bytes at 1 and 2 threads); Ray starts its
    workers with OMP_NUM_THREADS=1. With this, every executor builds what `edgepack build`
    builds on this machine."""
    import torch

    return {"OMP_NUM_THREADS": str(torch.get_num_threads())}


class LocalExecutor:
    name = "local"

    def __init__(self, workers: int):
        self.capacity = workers
        self._env = {**os.environ, **step_environment()}
        self._running: dict[str, tuple[subprocess.Popen, Path]] = {}
        self._folder = Path(tempfile.mkdtemp(prefix="edgepack-matrix-"))

    def submit(self, step: Step) -> None:
        result = self._folder / f"{step.id}.json"
        result.unlink(missing_ok=True)
        log = open(self._folder / f"{step.id}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "edgepack.matrix.worker", str(result)], stdin=subprocess.PIPE,
                                stdout=log, stderr=log, start_new_session=True, env=self._env)
        proc.stdin.write(json.dumps({"kind": step.kind, "doc": {**step.doc, "label": step.label}}).encode())
        proc.stdin.close()
        log.close()
        self._running[step.id] = (proc, result)

    def poll(self, timeout: float) -> list[tuple[str, dict]]:
        deadline = time.monotonic() + timeout
        while True:
            done = []
            for sid, (proc, result) in list(self._running.items()):
                code = proc.poll()
                if code is None:
                    continue
                del self._running[sid]
                if result.is_file():
                    done.append((sid, json.loads(result.read_text())))
                else:   # the process died before writing its result: a lost step
                    how = f"killed by signal {-code}" if code < 0 else f"exited {code} without a result"
                    done.append((sid, {"ok": False, "error": f"worker process {how}", "deterministic": False}))
            if done or time.monotonic() >= deadline:
                return done
            time.sleep(0.2)

    def cancel_all(self) -> None:
        for proc, _ in self._running.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc, _ in self._running.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self._running.clear()

    def close(self) -> None:
        import shutil

        shutil.rmtree(self._folder, ignore_errors=True)


def _ray_step(kind: str, doc: dict) -> dict:
    from edgepack.matrix.worker import outcome

    return outcome(kind, doc)


class RayExecutor:
    """Steps as Ray tasks. A task that raises is retried by the scheduler, as locally; a
    worker lost mid-step surfaces as Ray's own error and is retried the same way."""

    name = "ray"

    def __init__(self, address: str | None, *, env: dict | None = None):
        import ray

        self.ray = ray
        if not ray.is_initialized():
            env_vars = {**(env or {}), **step_environment()}
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                     runtime_env={"env_vars": env_vars} if env_vars else None)
        self._remote = ray.remote(max_calls=1, max_retries=0)(_ray_step)
        self.capacity = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._running: dict = {}   # ObjectRef -> step id

    def submit(self, step: Step) -> None:
        # Ray places the step where its memory and CPU hints fit (a node with less memory
        # than a step's hint never runs it: graph.STEP_MEMORY_GB).
        ref = self._remote.options(num_cpus=step.cpus, memory=int(step.memory_gb * 1024**3),
                                   name=step.label[:100]).remote(step.kind, {**step.doc, "label": step.label})
        self._running[ref] = step.id

    def poll(self, timeout: float) -> list[tuple[str, dict]]:
        if not self._running:
            time.sleep(min(timeout, 0.2))
            return []
        ready, _ = self.ray.wait(list(self._running), num_returns=len(self._running), timeout=timeout)
        done = []
        for ref in ready:
            sid = self._running.pop(ref)
            try:
                done.append((sid, self.ray.get(ref)))
            except Exception as e:  # noqa: BLE001 - a lost worker or node, a cancelled task
                first = (str(e).strip().splitlines() or [""])[0][:300]
                done.append((sid, {"ok": False, "error": f"{type(e).__name__}: {first}", "deterministic": False}))
        return done

    def cancel_all(self) -> None:
        for ref in list(self._running):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished
                pass
        self._running.clear()

    def close(self) -> None:
        self.ray.shutdown()


def run_graph(plan: MatrixPlan, executor, say) -> tuple[list[StepState], bool]:
    """Run every step of `plan` on `executor`; returns each step's final state, and
    whether Ctrl-C stopped the run (running steps cancelled, the rest not started)."""
    states = {s.id: StepState(s) for s in plan.order()}
    order = list(states)
    started = time.perf_counter()

    def counts() -> str:
        by = {}
        for st in states.values():
            by[st.status] = by.get(st.status, 0) + 1
        return (f"{by.get('done', 0)}/{len(states)} done, {by.get('running', 0)} running, "
                f"{by.get('failed', 0)} failed, {by.get('skipped', 0)} skipped")

    def line(st: StepState, what: str) -> None:
        say(f"[{time.perf_counter() - started:7.1f} s] {st.step.label}: {what} ({counts()})")

    try:
        while True:
            for sid in order:   # a step after a failed one cannot run
                st = states[sid]
                if st.status == "pending" and any(states[d].status in ("failed", "skipped") for d in st.step.deps):
                    st.status = "skipped"
                    st.errors.append("a step it needs failed")
                    line(st, "skipped")
            running = sum(1 for st in states.values() if st.status == "running")
            for sid in order:
                st = states[sid]
                if running >= executor.capacity:
                    break
                if st.status == "pending" and all(states[d].status == "done" for d in st.step.deps):
                    st.status, st.started = "running", time.perf_counter()
                    st.attempts += 1
                    executor.submit(st.step)
                    running += 1
                    line(st, "started" if st.attempts == 1 else f"started again (attempt {st.attempts})")
            if not any(st.status in ("pending", "running") for st in states.values()):
                break
            for sid, outcome in executor.poll(1.0):
                st = states[sid]
                st.seconds += time.perf_counter() - st.started
                if outcome.get("ok"):
                    st.status, st.result = "done", outcome["result"]
                    line(st, f"done in {st.seconds:.1f} s")
                    continue
                st.errors.append(outcome["error"])
                if not outcome.get("deterministic") and st.attempts <= plan.retries:
                    st.status = "pending"
                    line(st, f"failed ({outcome['error']}); retrying")
                else:
                    st.status = "failed"
                    line(st, f"failed: {outcome['error']}")
    except (KeyboardInterrupt, Interrupted):
        say("interrupted: cancelling the running steps; finished dists are kept")
        executor.cancel_all()
        for st in states.values():
            if st.status in ("running", "pending"):
                st.status = "cancelled"
        return [states[sid] for sid in order], True
    return [states[sid] for sid in order], False
