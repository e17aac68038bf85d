"""The model card: README.md at the top of a release, for the app or firmware engineer
who loads the artifacts. Written from the manifest alone, so it can never disagree
with it: what the model does, each artifact's inputs and outputs (shapes, dtypes,
quantization), preprocessing, accuracy and latency per device, and how to load each
artifact in its runtime on Android and Linux (each format's snippet, edgepack.formats)."""

from __future__ import annotations

from edgepack.formats import FORMATS
from edgepack.release.scores import reference_line, score_columns

CARD_FILE = "README.md"


def _md(value) -> str:
    # Table cells: a '|' or newline from a user's description would break the table.
    return str(value).replace("|", "\\|").replace("\n", " ")


def _bytes(n: int) -> str:
    return f"{n:,} bytes ({n / 1e3:.1f} KB)"


def _tensor(t: dict) -> str:
    shape = "[" + ", ".join(str(d) for d in t.get("shape", [])) + "]"
    q = t.get("quantization")
    quant = f"scale {q['scale']:.8g}, zero point {q['zero_point']}" if q else "none (float)"
    return f"| {_md(t.get('name'))} | {shape} | {t.get('dtype')} | {quant} |"


_DTYPE_BYTES = {"float32": 4, "int8": 1, "uint8": 1, "int32": 4, "int64": 8, "float16": 2}


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d if isinstance(d, int) else 1   # a named (dynamic) dimension: one per call as shown
    return n


def _snippet(a: dict) -> str:
    sig = a.get("signature") or {}
    ins, outs = sig.get("inputs") or [{}], sig.get("outputs") or [{}]
    i, o = ins[0], outs[0]
    in_shape = [d if isinstance(d, int) else 1 for d in i.get("shape", [])]
    out_shape = [d if isinstance(d, int) else 1 for d in o.get("shape", [])]
    iq, oq = i.get("quantization"), o.get("quantization")
    quantize = (f"x = np.clip(np.round(x / {iq['scale']:.8g}) + ({iq['zero_point']}), -128, 127).astype(np.int8)   # int8 input\n"
                if iq else "")
    dequantize = f"y = (y.astype(np.float32) - ({oq['zero_point']})) * {oq['scale']:.8g}   # int8 output to float\n" if oq else ""
    fmt = FORMATS.find(a.get("format"))
    if fmt is None or not fmt.card:   # a format this edgepack does not know, or without a snippet
        return ""
    # The snippet loads the artifact as the build verified it, whatever the target asked.
    verified_without = (a.get("delegate") or {}).get("used") == "none" and fmt.delegates[0] != "none"
    template = fmt.card_without_delegate if verified_without and fmt.card_without_delegate else fmt.card
    return template.format(
        file=a["file"], in_name=i.get("name", "input"), in_shape=in_shape, in_numel=_numel(in_shape),
        in_shape_kt=", ".join(f"{d}L" for d in in_shape),
        in_bytes=_numel(in_shape) * _DTYPE_BYTES.get(i.get("dtype"), 4), out_bytes=_numel(out_shape) * _DTYPE_BYTES.get(o.get("dtype"), 4),
        in_desc=f"{i.get('dtype')} {in_shape}", out_desc=f"{o.get('dtype')} {out_shape}", quantize=quantize, dequantize=dequantize,
    )


def _delegate_note(a: dict, target: str) -> list[str]:
    """What the artifact was verified on; a delegate the target asked for that the
    build could not verify is named as unverified, never shown as the way to load it."""
    d = a.get("delegate")
    if not d:
        return []
    lines = [f"Verified on the build host with: {_md(d['detail'])}."]
    if d["used"] != d["requested"]:
        lines.append(f"The `{target}` target asks for delegate `{d['requested']}`; edgepack could not run the file with it, "
                     f"so outputs with it are unverified and the snippet above does not enable it.")
    return [*lines, ""]


def render(m: dict) -> str:
    proj = m.get("project") or {}
    src = m.get("source") or {}
    ev = m.get("evaluation") or {}
    cal = m.get("calibration") or {}
    arts = m.get("artifacts") or []
    scores = score_columns({**m, "artifacts": arts})
    name, version, target = proj.get("name", "?"), proj.get("version", "?"), m.get("target", "?")
    lines = [f"# {name} {version} for {target}", ""]
    if proj.get("description"):
        lines += [proj["description"], ""]
    lines += [
        f"Built by edgepack {(m.get('toolchain') or {}).get('edgepack', '?')} for the `{target}` target "
        f"(device profile `{m.get('device_profile', '?')}`). "
        f"Every file in this release is listed with its sha256 in `manifest.json`"
        + (", which `manifest.json.sig` signs (Ed25519)." if (m.get("package") or {}).get("signature") else "."),
        "",
        "## What the model does",
        "",
        f"A {ev.get('task', 'classification')} model {_interface(src)}. "
        f"The source model has {src.get('parameters', '?'):,} parameters ({_bytes(src.get('fp32_weight_bytes', 0))} as fp32) "
        + (f"and reaches {ev['reference_accuracy'] * 100:.2f}% top-1 accuracy on {ev.get('samples', '?')} held-out samples."
           if ev.get("reference_accuracy") is not None else f"and scores {reference_line(m)} (held out)."),
        "",
        "## Preprocessing",
        "",
        f"Give every artifact float32 inputs exactly as the project's data hook prepares them: shape "
        f"{src.get('input_shape')}, values observed between {ev.get('min', '?')} and {ev.get('max', '?')} on the evaluation data "
        f"(calibration data: {cal.get('min', '?')} to {cal.get('max', '?')}). Inputs outside that range saturate in the int8 "
        "artifacts. Where an artifact's input is int8, quantize first: `q = round(x / scale) + zero_point`, clipped to [-128, 127]; "
        "an int8 output converts back with `y = (q - zero_point) * scale`.",
        "",
        *_several_inputs_note(src),
        "## Artifacts",
        "",
        "| file | runtime | precision | size | " + " | ".join(_md(h) for h, _, _ in scores) + " | SNR dB vs fp32 reference |",
        "| --- | --- | --- | --- | " + "--- | " * len(scores) + "--- |",
    ]
    runtime = {f.name: f.runtime for f in FORMATS}
    for a in arts:
        lines.append(f"| `{_md(a['file'])}` | {runtime.get(a['format'], a['format'])} | {a.get('precision', '?')} | "
                     f"{_bytes(a['size_bytes'])} | " + " | ".join(_md(str(show(a))) for _, show, _ in scores)
                     + f" | {'exact' if a.get('snr_db') is None else format(a['snr_db'], '.1f')} |")
    lines += ["", "## Inputs and outputs", ""]
    for a in arts:
        sig = a.get("signature") or {}
        lines += [f"### `{_md(a['file'])}`", "", "| tensor | shape | dtype | quantization |", "| --- | --- | --- | --- |"]
        lines += [_tensor(t) for t in (sig.get("inputs") or [])]
        lines += [_tensor(t) for t in (sig.get("outputs") or [])]
        lines += ["", "A named dimension (such as `batch`) is dynamic; every other is fixed.", ""] if any(
            not isinstance(d, int) for t in (sig.get("inputs") or []) for d in t.get("shape", [])) else [""]
    lines += ["## Latency", "", "| file | device | method | runtime | threads | p50 ms | p90 ms |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for a in arts:
        lat = a.get("latency_ms") or {}
        if "p50" in lat:
            lines.append(f"| `{_md(a['file'])}` | build host ({lat.get('machine', '?')}) | measured, batch 1, {lat.get('iterations', '?')} runs "
                         f"| {_md(lat.get('runtime', '?'))} | {lat.get('threads', '?')} | {lat['p50']:.4f} | {lat.get('p90', float('nan')):.4f} |")
        for d in a.get("measurements") or []:
            p50, p90 = d.get("p50_ms"), d.get("p90_ms")
            p50_s = "-" if p50 is None else f"{p50:.4f}"
            p90_s = "-" if p90 is None else f"{p90:.4f}"
            lines.append(f"| `{_md(a['file'])}` | {_md(d.get('device', '?'))} | {_md(d.get('method', '?'))} | {_md(d.get('runtime', '-'))} "
                         f"| {d.get('threads', '-')} | {p50_s} | {p90_s} |")
    lines += ["", "Host figures come from the machine that built the release; they rank the formats but are not phone or board latency.", ""]
    lines += ["## Loading each artifact", ""]
    for a in arts:
        snippet = _snippet(a)
        if snippet:
            lines += [f"### `{_md(a['file'])}`", "", snippet, ""]
            lines += _delegate_note(a, target)
    git = m.get("git")
    lines += [
        "## Provenance", "",
        f"- source weights: `{_md(src.get('file', '?'))}` sha256 `{src.get('sha256', '?')}`",
        f"- calibration data: {cal.get('samples', '?')} samples, sha256 `{cal.get('sha256', '-')}`",
        f"- evaluation data: {ev.get('samples', '?')} samples, sha256 `{ev.get('sha256', '-')}`",
        f"- project commit: {'not recorded (not a git checkout)' if not git else '`' + git['commit'] + '`' + (' with uncommitted changes' if git.get('dirty') else '')}",
        f"- compression recipe: {(m.get('recipe') or {}).get('name', 'none')} "
        f"({', '.join(str(r.get('pass')) for r in (m.get('recipe') or {}).get('stages') or []) or 'no model stages'})",
        "- toolchain: " + ", ".join(f"{k} {v}" for k, v in sorted((m.get("toolchain") or {}).items())),
        "",
        "## Checking this release", "",
        "```sh",
        "edgepack verify <archive>.tar.gz --public-key release.pub          # signature, every hash, nothing extra",
        "edgepack verify <archive>.tar.gz --public-key release.pub --run    # and re-run each artifact on testdata/",
        "openssl pkeyutl -verify -pubin -inkey release.pub -rawin -in manifest.json -sigfile manifest.json.sig",
        "```",
        "",
        "`report.html` has the plots: size, accuracy and latency per artifact, the accuracy/size trade-off, and operator counts.",
        "",
    ]
    return "\n".join(lines)


def _interface(src: dict) -> str:
    """`taking x (shape ...) and returning y`, every input and output in declared order."""
    inputs = src.get("inputs") or [{"name": src.get("input_name", "input"), "shape": src.get("input_shape"),
                                    "dtype": "float32"}]
    outputs = [o["name"] for o in src.get("outputs") or []] or [src.get("output_name", "output")]
    taking = ", ".join(f"`{_md(i['name'])}` ({i['dtype']}, shape {i['shape']})" for i in inputs)
    returning = ", ".join(f"`{_md(n)}`" for n in outputs)
    return f"taking {taking} and returning {returning}"


def _several_inputs_note(src: dict) -> list[str]:
    if len(src.get("inputs") or []) < 2 and len(src.get("outputs") or []) < 2:
        return []
    return ["With several inputs and outputs: the `.tflite` signature and the `.onnx` graph name them as listed above; a "
            "`.pte` takes and returns them by position in that order (`manifest.json` maps each position to its name). "
            "Integer inputs (ids, indices) are given as they are, never quantized. The ranges above are of the first input.",
            ""]

