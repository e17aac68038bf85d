"""The build and profile spine: explicit steps, each taking and returning typed records.

    plan -> load -> capture -> compress -> export -> verify -> measure -> gate -> write

`edgepack.api.build` composes all of them; `edgepack.profile.profile` composes measure
(and the parity inside it) on artifacts that already exist. Each step is one module:

- load:     the source model, the data splits and the reference outputs (`Loaded`)
- capture:  the graph captured by torch.export once for every format (and translated to
            ONNX when a target lists it), before any compression or calibration
- compress: the recipe's model stages, gated and cached (`Compressed`)
- export:   one export per (format, precision, dynamic dims), shared by targets (`Exported`)
- verify:   the artifact in its own runtime on the evaluation split: parity, host
            latency, dynamic-dim checks (`Verified`)
- measure:  runs on a device runner (emulated, ssh, adb) and latency estimates
            (`Measurement` rows), int8 warnings
- gate:     the target's budgets against the records (`Verdict`)
- write:    the manifest and the dist folder, swapped in atomically
"""
