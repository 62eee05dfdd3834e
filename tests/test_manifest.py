"""The manifest: validation names the field at fault; the published schema is generated from the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from registry.errors import ManifestError
from registry.manifest import load_manifest, manifest_schema, parse_manifest
from tests.plugin_folders import EXAMPLE_PLUGIN, ROOT

BASE = yaml.safe_load((EXAMPLE_PLUGIN / "diffplugin.yaml").read_text())


def parse(**changes):
    data = {**BASE, **changes}
    return parse_manifest(yaml.safe_dump({k: v for k, v in data.items() if v is not None}), "test.yaml")


def test_example_manifest_is_valid() -> None:
    manifest = load_manifest(EXAMPLE_PLUGIN)
    assert manifest.id == "acme/sharpen" and manifest.kind == "python" and not manifest.non_commercial
    assert manifest.search_texts()[2:] == manifest.examples


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"id": "sharpen"}, "id", "namespace/name"),
    ({"id": "Acme/Sharpen"}, "id", "namespace/name"),
    ({"version": "one"}, "version", "not a valid version"),
    ({"examples": ["a", "b"]}, "examples", "at least 3"),
    ({"kind": "diffplugin"}, None, "needs a 'diffplugin' table"),
    ({"weights": [{"path": "w.bin", "sha256": "0" * 64}]}, "weights.0.path", "safetensors only"),
    ({"weights": [{"path": "../w.safetensors", "sha256": "0" * 64}]}, "weights.0.path", "inside the plugin"),
    ({"weights": [{"path": "w.safetensors", "sha256": "xyz"}]}, "weights.0.sha256", "pattern"),
    ({"weights": [{"path": "w.safetensors", "sha256": 10**63}]}, "weights.0.sha256", "in quotes"),
    ({"homepage": "ftp://x"}, "homepage", "http"),
    ({"python": {"entry_point": "no colon"}}, "python.entry_point", "module:callable"),
    ({"python": {"entry_point": "a:b", "options": {"amount": 1}, "presets": {"soft": {"radius": 2}}}}, "python",
     "preset 'soft' sets 'radius', which 'options' does not declare"),
    ({"python": {"entry_point": "a:b", "options": {"amount": 1}, "presets": {"Soft One": {"amount": 2}}}},
     "python", "preset name 'Soft One'"),
    ({"python": {"entry_point": "a:b", "options": {"amount": 1}, "presets": {"soft": {}}}}, "python",
     "preset 'soft' sets no option"),
    ({"python": {"entry_point": "a:b", "options": {"amount": 1.0}, "presets": {"soft": {"amount": "high"}}}},
     "python", "preset 'soft' sets 'amount' to 'high', a text; its default 1.0 is a number"),
    ({"python": {"entry_point": "a:b", "options": {"warm": False}, "presets": {"soft": {"warm": 1}}}},
     "python", "sets 'warm' to 1, a number; its default False is a flag"),
    ({"surprise": 1}, "surprise", "Extra inputs"),
    ({"license": None}, "license", "required"),
])
def test_invalid_fields_are_named(changes, field, message) -> None:
    with pytest.raises(ManifestError) as info:
        parse(**changes)
    assert info.value.source == "test.yaml" and info.value.field == field
    assert message in str(info.value)


def test_yaml_errors_and_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not valid YAML"):
        parse_manifest("id: [unclosed", "bad.yaml")
    with pytest.raises(ManifestError, match=r"needs a diffplugin\.yaml"):
        load_manifest(tmp_path)


def test_non_commercial_licences_are_recognised() -> None:
    assert parse(license="CC-BY-NC-SA-4.0").non_commercial
    assert parse(license="Proprietary, non-commercial use only").non_commercial
    assert not parse(license="Apache-2.0").non_commercial and not parse(license="CC-BY-4.0").non_commercial


def test_a_diffplugin_plugin_does_one_task() -> None:
    with pytest.raises(ManifestError, match="exactly one task"):
        parse(kind="diffplugin", python=None, diffplugin={"start": "noise"}, tasks=["derain", "dehaze"])


def test_published_schema_is_generated_from_the_model() -> None:
    published = json.loads((ROOT / "docs" / "manifest-schema.json").read_text())
    assert published == manifest_schema(), "run `diffplugin plugins schema -o docs/manifest-schema.json`"
    assert "description" in published["properties"]["examples"]


def test_official_builtin_manifests_cover_the_eight_tasks() -> None:
    folder = ROOT / "plugins" / "diffplugin" / "manifests"
    manifests = [load_manifest(p) for p in sorted(folder.glob("*.yaml"))]
    assert sorted(m.tasks[0] for m in manifests) == sorted(
        ["derain", "desnow", "dehaze", "deblur", "demoire", "highlight", "lowlight", "face"])
    assert all(m.non_commercial and m.weights_source == "models-pull" for m in manifests)
    starts = {m.tasks[0]: m.diffplugin.start for m in manifests}
    assert starts["lowlight"] == starts["highlight"] == "noise" and starts["derain"] == "noised-input"
