"""What targets of one build share: an artifact is exported, verified on the host and run
under emulation once per export key (and emulated CPU), however many targets list it."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from edgepack.interrupts import check_interrupted
from edgepack.pipeline import export as export_step
from edgepack.pipeline import measure as measure_step
from edgepack.pipeline import verify as verify_step
from edgepack.errors import ToolchainError
from edgepack.pipeline.records import ArtifactRecord, Compressed, ExportKey, FailedArtifact, Loaded


class Workshop:
    def __init__(self, plan, loaded: Loaded, compressed: Compressed, *, workspace: Path, host_runner, say,
                 uncapturable: dict | None = None):
        self.plan, self.loaded, self.compressed = plan, loaded, compressed
        self.workspace, self.host, self.say = workspace, host_runner, say
        self._exported: dict[ExportKey, tuple] = {}      # key -> (ModelArtifact, Verified)
        self._failed: dict[ExportKey, ToolchainError] = {}   # a key that failed is not tried again
        self._emulated: dict[tuple[ExportKey, str], measure_step.DeviceRun] = {}
        self._seconds: dict = {}        # export key (and emulated CPU) -> wall seconds of each step
        self._int8_failure: ToolchainError | None = None
        self._uncapturable = uncapturable or {}   # format or (format, precision) -> why the capture step stopped it
        self._int8: list = []   # [int8_choices.Int8Choices] once made: one rewrite and keep_float serve every int8 format
        self.timings: dict = {}   # the build's shared steps this workshop ran (int8_choices), wall seconds

    def _int8_choices(self, precision: str):
        if not precision.startswith("int8"):
            return None
        if self._int8_failure is not None:
            raise self._int8_failure
        if not self._int8:
            import time

            from edgepack.pipeline.int8_choices import choose

            started = time.perf_counter()
            self._int8.append(choose(self.plan, self.compressed.model, self.loaded, self.compressed, self.say))
            self.timings["int8_choices"] = round(time.perf_counter() - started, 2)
        return self._int8[0]

    def _quantize(self, precision: str):
        """The quantize options an artifact of `precision` is keyed and exported with."""
        choices = self._int8_choices(precision)
        if choices:
            return choices.quantize
        opts = self.plan.recipe.quantize
        # "auto" chooses layers for int8; a float artifact (an ONNX fp16 one) keeps none in fp32.
        return opts.unresolved() if opts.decided_by_build else opts

    def _export_and_verify(self, key: ExportKey, file_name: str, dims: tuple):
        if key not in self._exported:
            plan, project = self.plan, self.plan.project
            started = time.perf_counter()
            choices = self._int8_choices(key.precision)
            artifact = export_step.export(plan, key, file_name=file_name, model=self.compressed.model, loaded=self.loaded,
                                          dims=dims, workspace=self.workspace, say=self.say,
                                          rewritten=choices.rewritten if choices else None,
                                          quantize=self._quantize(key.precision))
            if choices and choices.details:
                merged = {**artifact.details, **choices.details}
                if "range_tuning" in choices.details:   # the build's tuning, and what this artifact's calibration matched
                    merged["range_tuning"] = {**choices.details["range_tuning"], **artifact.details.get("range_tuning", {})}
                artifact = dataclasses.replace(artifact, details=merged)
            check_interrupted()
            exported = time.perf_counter()
            verified = verify_step.verify(self.host, artifact, fmt=key.format, precision=key.precision, delegate=key.delegate,
                                          loaded=self.loaded, compressed=self.compressed, dims=dims,
                                          model=self.compressed.model, interface=project.model,
                                          settings=project.build, say=self.say)
            check_interrupted()
            self._seconds[key] = {"export": round(exported - started, 2),
                                  "export_reused": artifact.reused,
                                  "verify": round(time.perf_counter() - exported, 2)}
            self._exported[key] = (artifact, verified)
        return self._exported[key]

    def _emulate(self, key: ExportKey, artifact, verified, device) -> measure_step.DeviceRun:
        """Parity on the device's emulated CPU and its instruction count. Emulated wall
        time is recorded as such; it is never presented as latency."""
        ekey = (key, device.qemu_cpu)
        if ekey not in self._emulated:
            from edgepack.devices.qemu import QemuRunner

            self.say(f"running {key.format} {key.precision} under qemu ({device.qemu_cpu})")
            started = time.perf_counter()
            settings, evaluation = self.plan.project.build, self.loaded.evaluation
            self._emulated[ekey] = measure_step.measure_on(
                QemuRunner(device, count_instructions=True), device, path=artifact.path, fmt=key.format,
                precision=key.precision, inputs=evaluation.x, reference=self.compressed.reference,
                labels=evaluation.y if self.plan.project.data.task == "classification" else None,  # a device run's accuracy is top-1
                input_names=[s.name for s in self.plan.project.model.input_specs],
                output_names=self.plan.project.model.output_names,
                recorded=verified.recorded, warmup=2, iterations=min(settings.iterations, 10), threads=1,
                activation_elements=self.compressed.costs.activation_elements,
                calibration=self.plan.latency_calibration, with_estimate=False, delegate=key.delegate)
            self._seconds[ekey] = round(time.perf_counter() - started, 2)
        return self._emulated[ekey]

    def stopped_by_capture(self, spec):
        """Why the capture step stopped this artifact's format (or format and precision), or None."""
        return self._uncapturable.get(spec.format) or self._uncapturable.get((spec.format, spec.precision))

    def export_only(self, target_plan, spec):
        """Export one artifact into the export cache, without verifying or measuring it: a
        build matrix's export step (edgepack.matrix), whose build step then reuses it."""
        project = self.plan.project
        key = export_step.export_key(project, target_plan.target, spec, self._quantize(spec.precision))
        choices = self._int8_choices(spec.precision)
        return export_step.export(self.plan, key, file_name=target_plan.files[(spec.format, spec.precision)],
                                  model=self.compressed.model, loaded=self.loaded,
                                  dims=export_step.dynamic_dims(project, target_plan.target, spec),
                                  workspace=self.workspace, say=self.say,
                                  rewritten=choices.rewritten if choices else None, quantize=self._quantize(spec.precision))

    def record(self, target_plan, spec) -> ArtifactRecord | FailedArtifact:
        """The record of one artifact of one target; a converter, quantizer or runtime
        failure is that artifact's record, so the target's other formats still build."""
        project = self.plan.project
        try:
            quantize = self._quantize(spec.precision)
        except ToolchainError as e:   # the shared int8 rewrite or analysis: every int8 artifact fails with it
            quantize, self._int8_failure = self.plan.recipe.quantize, e
        key = export_step.export_key(project, target_plan.target, spec, quantize)
        dims = export_step.dynamic_dims(project, target_plan.target, spec)
        file_name = target_plan.files[(spec.format, spec.precision)]
        stopped = self.stopped_by_capture(spec)
        if key not in self._failed and stopped is not None:
            self._failed[key] = stopped
        if key not in self._failed and spec.precision.startswith("int8") and self._int8_failure:
            self._failed[key] = self._int8_failure
        if key not in self._failed:
            try:
                return self._measured_record(target_plan, spec, key, dims, file_name)
            except ToolchainError as e:
                self.say(f"{spec.format} {spec.precision} failed: {e}")
                self._failed[key] = e
        e = self._failed[key]
        return FailedArtifact(file=file_name, key=key, stage=e.stage or "export", error=str(e))

    def _measured_record(self, target_plan, spec, key: ExportKey, dims: tuple, file_name: str) -> ArtifactRecord:
        project, device = self.plan.project, target_plan.device
        artifact, verified = self._export_and_verify(key, file_name, dims)
        rows: list = []
        seconds = dict(self._seconds[key])
        if self.plan.runner == "qemu":
            emulated = self._emulate(key, artifact, verified, device)
            seconds["emulate"] = self._seconds[(key, device.qemu_cpu)]
            # The same run serves several targets; each manifest names its own device.
            rows.append(emulated.row.model_copy(update={"device": device.name}))
            # Estimated at the build's thread count for this target's device profile.
            estimate = measure_step.estimate_from(emulated.result, device, artifact_bytes=artifact.size_bytes,
                                                  precision=spec.precision,
                                                  activation_elements=self.compressed.costs.activation_elements,
                                                  threads=project.build.threads,
                                                  calibration=self.plan.latency_calibration, fmt=key.format)
            if estimate:
                rows.append(estimate)
        warnings = [*verify_step.delegate_warnings(verified.delegate),
                    *measure_step.warnings_for(device, precision=spec.precision, export_details=artifact.details, rows=rows)]
        return ArtifactRecord(file=file_name, key=key, artifact=artifact, verified=verified,
                              fp32_reference_bytes=self.loaded.source.fp32_bytes, measurements=tuple(rows),
                              warnings=tuple(warnings), seconds=seconds)
