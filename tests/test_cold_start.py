"""Cold start (issue 17): the selector at use runs without PyTorch and gives what the PyTorch path gives; the
examples' embeddings are cached and refreshed only where plugins changed; requests that need no model are
answered before any model loads."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from typer.testing import CliRunner

from assistant.cli import app
from assistant.selector import load_selector
from assistant.selector import model as model_module
from assistant.selector import runtime as runtime_module
from assistant.selector.cache import EmbeddingCache
from assistant.selector.instructions import load_instructions
from assistant.selector.model import (
    ADAPTER_FOLDER,
    EXAMPLES_CACHE,
    WEIGHTS,
    Candidate,
    OfflineSelector,
    SelectorConfig,
    SupportBank,
    label_scores,
)
from assistant.selector.runtime import NumpyMiniLM, TorchMiniLM, Unsupported, encoder_key, load_runtime
from assistant.selector.train import label_scores as train_label_scores
from registry.embedding import minilm_path
from registry.store import Registry
from tests.plugin_folders import code_folder

ROOT = Path(__file__).resolve().parent.parent
ADAPTER = WEIGHTS / ADAPTER_FOLDER
TASKS = ("derain", "desnow", "dehaze", "deblur", "demoire", "highlight", "lowlight", "face")
OFFICIAL = [Candidate(f"diffplugin/{t}", t, ()) for t in TASKS]
runner = CliRunner()


# --------------------------------------------------------------------------- the NumPy runtime
@pytest.fixture(scope="module")
def runtimes() -> tuple[NumpyMiniLM, TorchMiniLM]:
    return NumpyMiniLM.load(minilm_path(), ADAPTER), TorchMiniLM(ADAPTER)


def test_numpy_embeddings_equal_the_pytorch_path(runtimes: tuple[NumpyMiniLM, TorchMiniLM]) -> None:
    fast, reference = runtimes
    texts = ["remove the rain", "", "Bitte den Nebel entfernen — und heller!",
             *[r.text for r in load_instructions(split="val")[:60]]]
    longest = ["brighten it " * 200]  # past MiniLM's 256 tokens: truncated alike
    for batch in (texts, longest):
        got, expected = fast.embed(batch), reference.embed(batch)
        assert got.dtype == np.float32 and got.shape == expected.shape == (len(batch), 384)
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert (got * expected).sum(axis=1).min() >= 0.99999
        assert np.abs(got - expected).max() < 1e-5


def test_selections_on_the_validation_split_equal_the_pytorch_path(runtimes: tuple[NumpyMiniLM, TorchMiniLM]) -> None:
    fast, reference = runtimes
    bank = SupportBank.load(WEIGHTS)
    config = SelectorConfig.model_validate_json((WEIGHTS / "selector.json").read_text())
    colorize = Candidate("acme/colorize", "colorize", ("colorize this black and white photo",
                                                        "add colour to my old grayscale picture"))
    one, other = (OfflineSelector(encoder, bank, [*OFFICIAL, colorize], config) for encoder in (fast, reference))
    for row in load_instructions(split="val"):
        a, b = one.select(row.text), other.select(row.text)
        assert [(p.id, p.clause) for p in a.plugins] == [(p.id, p.clause) for p in b.plugins], row.text
        assert all(abs(p.score - q.score) < 1e-4 for p, q in zip(a.plugins, b.plugins, strict=True))
        assert a.notes == b.notes


def test_the_merged_encoder_is_kept_between_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "kernels.safetensors"
    texts = ["remove the rain", "brighten it, then clear the fog"]
    fresh = NumpyMiniLM.load(minilm_path(), ADAPTER)
    built = NumpyMiniLM.load(minilm_path(), ADAPTER, file)
    assert file.is_file() and np.array_equal(built.embed(texts), fresh.embed(texts))
    merged: list[Path] = []
    lora_deltas = runtime_module.lora_deltas
    monkeypatch.setattr(runtime_module, "lora_deltas", lambda *a: merged.append(a[0]) or lora_deltas(*a))
    kept = NumpyMiniLM.load(minilm_path(), ADAPTER, file)  # from the file: nothing merged
    assert merged == [] and np.array_equal(kept.embed(texts), fresh.embed(texts))
    other = tmp_path / "adapter"
    other.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (other / name).write_bytes((ADAPTER / name).read_bytes())
    (other / "README.md").write_text("another adapter folder: another key")
    NumpyMiniLM.load(minilm_path(), other, file)
    assert merged == [other]
    file.write_bytes(file.read_bytes()[:1000])  # damaged: merged again, and the file replaced
    again = NumpyMiniLM.load(minilm_path(), ADAPTER, file)
    assert merged == [other, ADAPTER] and np.array_equal(again.embed(texts), fresh.embed(texts))
    assert NumpyMiniLM.load(minilm_path(), ADAPTER, file) and merged == [other, ADAPTER]
    (tmp_path / "a-file").write_text("")
    unwritable = NumpyMiniLM.load(minilm_path(), ADAPTER, tmp_path / "a-file" / "kernels.safetensors")
    assert np.array_equal(unwritable.embed(texts), fresh.embed(texts))  # not kept, and nothing failed


def test_numpy_and_training_label_scores_agree() -> None:
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(7, 16)).astype(np.float32)
    support = rng.normal(size=(20, 16)).astype(np.float32)
    labels = np.array([0] * 9 + [1] * 2 + [3] * 9)  # label 2 has no rows; label 1 fewer than k
    got = label_scores(queries, support, labels, 4, 3)
    expected = train_label_scores(torch.from_numpy(queries), torch.from_numpy(support), torch.from_numpy(labels), 4, 3)
    assert np.allclose(got, expected.numpy(), atol=1e-5)
    assert (got[:, 2] == -1).all()


def test_the_pytorch_path_is_used_where_the_numpy_one_cannot_run(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    loaded: list[Path | None] = []
    monkeypatch.setattr(runtime_module.TorchMiniLM, "__init__", lambda self, adapter: loaded.append(adapter))
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # not installed
    assert isinstance(load_runtime(ADAPTER), TorchMiniLM) and loaded == [ADAPTER]
    monkeypatch.delitem(sys.modules, "tokenizers")
    dora = tmp_path / "dora"
    dora.mkdir()
    (dora / "adapter_config.json").write_text(json.dumps({**json.loads((ADAPTER / "adapter_config.json").read_text()),
                                                          "use_dora": True}))
    (dora / "adapter_model.safetensors").write_bytes((ADAPTER / "adapter_model.safetensors").read_bytes())
    with pytest.raises(Unsupported):
        NumpyMiniLM.load(minilm_path(), dora)
    assert isinstance(load_runtime(dora), TorchMiniLM) and loaded[-1] == dora
    assert isinstance(load_runtime(ADAPTER), NumpyMiniLM)


def test_select_plan_and_a_built_in_edit_import_no_torch(tmp_path: Path) -> None:
    """In a fresh process: neither torch nor sentence-transformers, chromadb or diffusers."""
    out = tmp_path / "out.png"
    script = f"""
import sys
from typer.testing import CliRunner
from assistant.cli import app
runner = CliRunner()
for args in (["select", "remove the rain, then brighten it", "--json"], ["plan", "clear the fog", "--json"],
             ["edit", {str(ROOT / 'examples/photos/chelsea.jpg')!r}, "brighten it", "-o", {str(out)!r}, "--json"]):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
heavy = sorted(m for m in ("torch", "sentence_transformers", "chromadb", "diffusers", "transformers", "peft")
               if m in sys.modules)
print(heavy)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**_env(), "DIFFPLUGIN_HOME": str(tmp_path / "home")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert out.is_file()


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "DIFFPLUGIN_REGISTRY"}


# --------------------------------------------------------------------------- the examples' cache
class CountingEncoder:
    """Stands in for MiniLM: a fixed unit vector per text, and a record of what was encoded."""

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.encoded += texts
        rows = [np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).normal(size=384)
                for t in texts]
        rows = np.array(rows, dtype=np.float32).reshape(len(texts), 384)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


NEGATIVE_TEXTS = {"make a negative of the photo", "invert the colours", "turn it into a film negative",
                  "Turns a photo into its colour negative."}


def test_installing_or_removing_a_plugin_encodes_only_its_own_examples(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = CountingEncoder()
    monkeypatch.setattr(model_module, "load_runtime", lambda adapter: encoder)
    registry = Registry(tmp_path / "registry", models_dir=tmp_path / "models")
    first = load_selector(registry)
    built_in = set(encoder.encoded)
    assert built_in and len(encoder.encoded) == len(built_in)
    encoder.encoded.clear()
    again = load_selector(registry)  # a second start: nothing encoded
    assert encoder.encoded == [] and np.array_equal(first._support, again._support)

    registry.install(code_folder(tmp_path / "negative"), trust=True)
    with_negative = load_selector(registry)
    assert set(encoder.encoded) == NEGATIVE_TEXTS  # the new plugin's examples, and nothing else
    assert "negative" in with_negative.labels and len(with_negative._support) == len(first._support) + 4

    encoder.encoded.clear()
    registry.disable("acme/negative")
    load_selector(registry)
    registry.enable("acme/negative")
    load_selector(registry)  # disabled, its texts left the cache; enabled again, they are encoded again
    assert set(encoder.encoded) == NEGATIVE_TEXTS

    encoder.encoded.clear()
    registry.remove("acme/negative")
    after = load_selector(registry)
    assert encoder.encoded == [] and np.array_equal(after._support, first._support)
    cache = EmbeddingCache(registry.root / EXAMPLES_CACHE, encoder_key(ADAPTER))
    assert set(cache._load()) == built_in  # exactly the enabled plugins' texts


def test_another_adapter_or_a_damaged_cache_encodes_everything_again(tmp_path: Path) -> None:
    encoder = CountingEncoder()
    texts = ["clear the fog", "brighten it", "clear the fog"]
    other = tmp_path / "adapter"
    other.mkdir()
    for file in ADAPTER.iterdir():
        (other / file.name).write_bytes(file.read_bytes())
    cache = EmbeddingCache(tmp_path / "cache.safetensors", encoder_key(ADAPTER))
    first = cache.embed(encoder, texts)
    assert encoder.encoded == ["clear the fog", "brighten it"] and first.shape == (3, 384)
    assert encoder_key(other) == encoder_key(ADAPTER)  # the same files: the same encoder
    retrained = other / "adapter_model.safetensors"
    retrained.write_bytes(b"retrained" + retrained.read_bytes())
    encoder.encoded.clear()
    EmbeddingCache(tmp_path / "cache.safetensors", encoder_key(other)).embed(encoder, texts)
    assert encoder.encoded == ["clear the fog", "brighten it"]
    (tmp_path / "cache.safetensors").write_bytes(b"damaged")
    encoder.encoded.clear()
    assert np.array_equal(cache.embed(encoder, texts), first)
    assert encoder.encoded == ["clear the fog", "brighten it"]


def test_examples_are_embedded_in_bounded_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = NumpyMiniLM.load(minilm_path(), ADAPTER)
    widths: list[int] = []
    forward = fast._forward
    monkeypatch.setattr(fast, "_forward", lambda ids, lengths: widths.append(len(lengths)) or forward(ids, lengths))
    texts = [f"clear the fog, way {k}" + " please" * (k % 7) for k in range(150)]
    embeddings = fast.embed(texts)
    assert max(widths) <= runtime_module.BATCH and sum(widths) == 150
    alone = fast.embed([texts[17]])  # batching and sorting by length change nothing
    assert np.allclose(embeddings[17], alone[0], atol=1e-6)


# --------------------------------------------------------------------------- answered before any model loads
@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("assistant.selector.load_selector", refuse)
    monkeypatch.setattr("assistant.planning.load_planner", refuse)
    monkeypatch.setattr(model_module.OfflineSelector, "load", refuse)
    monkeypatch.setattr("assistant.ray_workers.RayWorkers", refuse)


@pytest.mark.parametrize("command", [["select", "  "], ["plan", ""], ["edit", "PHOTO", " ", "-o", "OUT"],
                                     ["batch", "FOLDER", "\t", "-o", "OUT"]])
def test_an_empty_request_is_answered_at_once(command: list[str], no_model: None, tmp_path: Path) -> None:
    photo = tmp_path / "in" / "a.png"
    photo.parent.mkdir()
    PIL.Image.new("RGB", (8, 8)).save(photo)
    places = {"PHOTO": str(photo), "OUT": str(tmp_path / "out.png"), "FOLDER": str(photo.parent)}
    result = runner.invoke(app, [places.get(a, a) for a in command])
    assert result.exit_code == 1, result.output
    assert "the request is empty" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out.png").exists()


def test_a_missing_ray_is_said_before_the_planner_loads(no_model: None, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # not importable
    folder = tmp_path / "in"
    folder.mkdir()
    PIL.Image.new("RGB", (8, 8)).save(folder / "a.png")
    result = runner.invoke(app, ["batch", str(folder), "brighten it", "-o", str(tmp_path / "out"), "--executor", "ray"])
    assert result.exit_code == 1 and "pip install 'diffplugin-assistant[ray]'" in result.output


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_batch_with_nothing_left_to_do_loads_nothing(executor: str, no_model: None, tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    PIL.Image.new("RGB", (8, 8)).save(folder / "a.png")
    PIL.Image.new("RGB", (8, 8)).save(out / "a.png")
    (out / "a.png.plan.yaml").write_text("request: brighten it\nsteps: []\n")
    result = runner.invoke(app, ["batch", str(folder), "brighten it", "-o", str(out), "--executor", executor, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["done"] == [] and [s["input"] for s in report["skipped"]] == [str(folder / "a.png")]


def test_erf_is_scipys_to_float32_rounding() -> None:
    from scipy.special import erf as reference

    from assistant.selector.runtime import erf

    x = np.linspace(-12, 12, 200_001, dtype=np.float32)
    assert erf(x).dtype == np.float32
    assert np.abs(erf(x) - reference(x.astype(np.float64))).max() < 6.5e-7
