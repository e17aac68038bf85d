"""What a TensorFlow SavedModel would run, read from its protobuf before TensorFlow loads it.

A SavedModel holds no Python, but its graph's ops can reach outside the model: read or
write files (ReadFile, WriteFile, a Print whose stream is a file path, summary writers,
dataset readers), call back into Python (PyFunc), map a file into memory
(ImmutableConst), or need a custom-op library that would have to be loaded as native
code. TensorFlow has no safe mode for this, so the scan here is edgepack's own: it parses
`saved_model.pb` (a protobuf, which parsing does not execute), follows the chosen
signature from its outputs back through the graph and into every function it calls, and
refuses the model when

- an op anywhere in the file is not one this TensorFlow registers (a custom op), or
- an op reachable from the signature reaches outside the model (REACHES_OUTSIDE), or
- an op elsewhere in the file does, other than the checkpoint ops TensorFlow writes into
  every SavedModel for `save`/`restore` (loading restores variables with its own ops and
  never runs these; the signature may not use them).

Assets must be files inside the folder's `assets/`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# Ops that touch files, streams, the network, processes or Python, by name pattern. Wide
# on purpose: an edge model's inference graph has no reason to use any of them, and a
# refusal names the op.
REACHES_OUTSIDE = re.compile(
    r"PyFunc|File|Reader|Dataset|Iterator|Summary|^Save|^Restore|MergeV2Checkpoints|^Print|^Debug|Rpc|Collective"
    r"|ImmutableConst|LoadAndRemap|^_(Host)?(Send|Recv)$|Checkpoint"
)
# What TensorFlow itself writes into every SavedModel's checkpoint functions.
CHECKPOINT_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename", "ShardedFilespec"})


@dataclass
class ScanResult:
    signature_ops: set[str] = field(default_factory=set)   # op types the signature runs
    all_ops: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


def read_saved_model(folder: Path):
    """The SavedModel protobuf of `folder`, or a ValueError saying what is missing."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb = folder / "saved_model.pb"
    if not pb.is_file():
        hint = " (a text saved_model.pbtxt: re-save it with tf.saved_model.save)" if (folder / "saved_model.pbtxt").exists() else ""
        raise ValueError(f"{folder} holds no saved_model.pb{hint}; give the folder tf.saved_model.save or "
                         "model.export(path) wrote")
    message = saved_model_pb2.SavedModel()
    try:
        message.ParseFromString(pb.read_bytes())
    except Exception as e:  # protobuf's DecodeError and its C++ variants
        raise ValueError(f"{pb}: not a SavedModel protobuf ({type(e).__name__})") from None
    if not message.meta_graphs:
        raise ValueError(f"{pb}: the SavedModel holds no meta graph")
    return message


def _called(node) -> list[str]:
    """The library functions a NodeDef names in any attribute (a call's `f`, a branch, a
    loop's body and condition, a dataset's map function, ...): every one may run."""
    names = []
    for value in node.attr.values():
        if value.HasField("func"):
            names.append(value.func.name)
        names.extend(f.name for f in value.list.func)
    return names


def _tensor_node(name: str) -> str:
    return name.lstrip("^").split(":")[0]


def serving_meta_graph(message, tags=("serve",)):
    for meta in message.meta_graphs:
        if set(tags) <= set(meta.meta_info_def.tags):
            return meta
    found = [sorted(m.meta_info_def.tags) for m in message.meta_graphs]
    raise ValueError(f"no meta graph tagged {list(tags)} (found {found}); export the model for serving")


def scan(folder: Path, signature: str) -> ScanResult:
    """The ops `signature` runs and every problem found (empty when the model is safe to load)."""
    from tensorflow.python.framework import op_def_registry

    message = read_saved_model(folder)
    meta = serving_meta_graph(message)
    if signature not in meta.signature_def:
        keys = sorted(k for k in meta.signature_def if not k.startswith("__"))
        raise ValueError(f"the SavedModel has no signature {signature!r}; it has {', '.join(keys) or 'none'}")
    library = {f.signature.name: f for f in meta.graph_def.library.function}
    nodes = {n.name: n for n in meta.graph_def.node}
    result = ScanResult()

    # Every op in the file: registered in this TensorFlow, or a function of the file's library.
    every_node = list(meta.graph_def.node) + [n for f in library.values() for n in f.node_def]
    for node in every_node:
        if node.op in library:
            continue
        result.all_ops.add(node.op)
    custom = sorted(op for op in result.all_ops if op_def_registry.get(op) is None)
    for op in custom:
        result.problems.append(f"op {op!r} is not a TensorFlow op (a custom op, whose native library edgepack "
                               "does not load); rebuild the model from TensorFlow's own ops")

    # What the signature runs: back from its outputs through the graph, into called functions.
    seen_nodes: set[str] = set()
    seen_functions: set[str] = set()
    stack = [_tensor_node(t.name) for t in meta.signature_def[signature].outputs.values()]
    functions: list[str] = []
    while stack:
        name = stack.pop()
        if name in seen_nodes or name not in nodes:
            continue
        seen_nodes.add(name)
        node = nodes[name]
        stack.extend(_tensor_node(i) for i in node.input)
        functions.extend(_called(node) + ([node.op] if node.op in library else []))
        if node.op not in library:
            result.signature_ops.add(node.op)
    while functions:
        name = functions.pop()
        if name in seen_functions or name not in library:
            continue
        seen_functions.add(name)
        for node in library[name].node_def:
            functions.extend(_called(node))
            if node.op in library:
                functions.append(node.op)
            else:
                result.signature_ops.add(node.op)

    for op in sorted(o for o in result.signature_ops if REACHES_OUTSIDE.search(o)):
        result.problems.append(f"signature {signature!r} runs op {op!r}, which reaches outside the model (files, "
                               "streams, Python or the network); export an inference-only signature")
    for op in sorted(o for o in result.all_ops - result.signature_ops
                     if REACHES_OUTSIDE.search(o) and o not in CHECKPOINT_OPS):
        result.problems.append(f"the SavedModel holds op {op!r}, which reaches outside the model (files, streams, "
                               "Python or the network) and which loading could run; export the model with "
                               "inference functions only")

    assets = folder / "assets"
    for asset in meta.asset_file_def:
        name = asset.filename
        target = (assets / name).resolve()
        if not name or Path(name).is_absolute() or not target.is_relative_to(assets.resolve()):
            result.problems.append(f"asset {name!r} is not a file inside {assets}")
    return result
