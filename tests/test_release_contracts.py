"""Pinned contracts: the keys of every --json envelope, the manifest against its
published JSON Schema (generated from the manifest model, and checked here by an
independent validator), and a --help that loads no crypto or plotting library."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from edgepack.release.manifest import SCHEMA_FILE
from release_helpers import REPO, built_output, cli
from test_release_report import _manifest

PACKAGE_KEYS = {"schema", "ok", "exit_code", "archive", "sha256", "size_bytes", "root", "project", "version", "target",
                "files", "signed", "key_fingerprint", "source_date_epoch", "seconds", "diff"}
VERIFY_KEYS = {"schema", "ok", "exit_code", "archive", "sha256", "root", "project", "version", "target", "signature",
               "authenticated", "authenticity", "key_fingerprint", "files_checked", "checks", "runs", "seconds"}
KEYGEN_KEYS = {"schema", "private_key", "public_key", "algorithm", "fingerprint"}
DIFF_KEYS = {"schema", "old", "new", "thresholds", "ok", "exit_code", "regressions", "changes"}
DIFF_CHANGE_KEYS = {"area", "item", "field", "old", "new", "note", "regression"}
BUILD_KEYS = {"schema", "project", "ok", "exit_code", "seconds", "targets"}
BUILD_TARGET_KEYS = {"target", "device", "passed", "failures", "failed_artifacts", "dist", "rejected", "manifest"}

# ------------------------------------------------------------------ a JSON Schema subset
# The schema uses only these keywords; the validator below implements exactly them, and
# a test keeps the schema inside the subset, so a pass here means a pass in any
# draft 2020-12 validator.
KEYWORDS = {"$schema", "$id", "$defs", "$ref", "title", "description", "type", "const", "enum", "required",
            "properties", "additionalProperties", "items", "pattern", "minimum", "maximum", "anyOf", "oneOf"}
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is_type(value, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, TYPES[name])


def validate(value, schema: dict, root: dict, path: str = "$") -> list[str]:
    if "$ref" in schema:
        return validate(value, root["$defs"][schema["$ref"].removeprefix("#/$defs/")], root, path)
    errors = []
    for word, wanted in (("anyOf", lambda n: n >= 1), ("oneOf", lambda n: n == 1)):
        if word in schema:
            results = [validate(value, branch, root, path) for branch in schema[word]]
            if not wanted(sum(1 for r in results if not r)):
                passing = sum(1 for r in results if not r)
                errors.append(f"{path}: {passing} of the {word} branches match: " + "; ".join(e for r in results for e in r[:1]))
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, n) for n in names):
            return [f"{path}: {type(value).__name__} is not {names}"]
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: {value!r} != {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if _is_type(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} > {schema['maximum']}")
    if isinstance(value, dict):
        errors += [f"{path}: missing {k!r}" for k in schema.get("required", []) if k not in value]
        props = schema.get("properties", {})
        for k, v in value.items():
            if k in props:
                errors += validate(v, props[k], root, f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected {k!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += validate(v, schema["additionalProperties"], root, f"{path}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            errors += validate(v, schema["items"], root, f"{path}[{i}]")
    return errors


def _keywords(node, in_properties=False):
    if isinstance(node, dict):
        for k, v in node.items():
            if not in_properties:
                yield k
            yield from _keywords(v, in_properties=(k in ("properties", "$defs") and not in_properties))
    elif isinstance(node, list):
        for v in node:
            yield from _keywords(v)


SCHEMA = json.loads(SCHEMA_FILE.read_text())


def test_manifest_schema_uses_only_the_validated_keywords():
    assert set(_keywords(SCHEMA)) <= KEYWORDS


def test_schema_validator_rejects_what_the_schema_forbids():
    m = _manifest(1, 1)
    assert validate(m, SCHEMA, SCHEMA) == []
    m["artifacts"][0]["sha256"] = "not-a-hash"
    m["surprise"] = 1
    del m["target"]
    errors = validate(m, SCHEMA, SCHEMA)
    assert any("sha256" in e for e in errors) and any("surprise" in e for e in errors) and any("'target'" in e for e in errors)


@pytest.mark.slow
def test_real_build_and_release_manifests_match_the_published_schema(tmp_path):
    build_manifest = json.loads((built_output() / "android" / "manifest.json").read_text())
    assert validate(build_manifest, SCHEMA, SCHEMA) == []
    proc = cli("package", "-t", "android", "-o", built_output(), "--archive", tmp_path / "r.tar.gz", "--json")
    assert proc.returncode == 0, proc.stderr
    from edgepack.release.diff import load_any_manifest

    assert validate(load_any_manifest(tmp_path / "r.tar.gz"), SCHEMA, SCHEMA) == []


# ------------------------------------------------------------------ envelopes


@pytest.mark.slow
def test_json_envelopes_of_keygen_package_verify_and_diff_have_pinned_keys(tmp_path):
    kg = cli("keygen", tmp_path / "k", "--json")
    assert kg.returncode == 0, kg.stderr
    key = json.loads(kg.stdout)
    assert set(key) == KEYGEN_KEYS and key["schema"] == "edgepack.keygen/1"
    pk = cli("package", "-t", "android", "-o", built_output(), "--archive", tmp_path / "r.tar.gz",
             "--sign-key", key["private_key"], "--against", built_output() / "android", "--json")
    assert pk.returncode == 0, pk.stderr
    pkg = json.loads(pk.stdout)
    assert set(pkg) == PACKAGE_KEYS and pkg["schema"] == "edgepack.package/1"
    assert set(pkg["files"][0]) == {"path", "sha256", "size_bytes"}
    assert set(pkg["diff"]) == DIFF_KEYS
    vf = cli("verify", tmp_path / "r.tar.gz", "--public-key", key["public_key"], "--json")
    assert vf.returncode == 0, vf.stderr
    ver = json.loads(vf.stdout)
    assert set(ver) == VERIFY_KEYS and ver["schema"] == "edgepack.verify/1"
    df = cli("diff", built_output() / "android", tmp_path / "r.tar.gz", "--json")
    doc = json.loads(df.stdout)
    assert set(doc) == DIFF_KEYS and doc["schema"] == "edgepack.diff/1"
    assert all(set(c) == DIFF_CHANGE_KEYS for c in doc["changes"])


def test_build_envelope_keys_are_pinned():
    from pathlib import Path

    from edgepack.api import BuildResult, TargetResult

    result = BuildResult("p", (TargetResult("android", "pixel-7", Path("d"), None, {}, (), ()),), 1.0)
    doc = result.as_dict()
    assert set(doc) == BUILD_KEYS and doc["schema"] == "edgepack.build/1"
    assert set(doc["targets"][0]) == BUILD_TARGET_KEYS


def test_help_loads_no_crypto_plotting_or_ml_library():
    code = ("import sys\nfrom edgepack.cli import app\n"
            "try:\n    app(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('cryptography', 'matplotlib', 'numpy', 'torch', 'onnx') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr
