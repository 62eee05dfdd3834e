"""`diffplugin select`, `train selector` and `eval selector` end to end, training determinism, and selection
with a photo through the paper's selector on tiny models."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from assistant.cli import app
from assistant.selector.encoder import encode, load_encoder
from assistant.selector.instructions import Instruction
from assistant.selector.model import Candidate, OfflineSelector, SupportBank
from assistant.selector.train import SelectorTrainConfig, train_selector
from tests.plugin_folders import diffplugin_folder

runner = CliRunner()
TASKS = ("derain", "desnow", "dehaze", "deblur", "demoire", "highlight", "lowlight", "face")


def ok(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_select_json_is_the_documented_format(tmp_path: Path) -> None:
    out = ok(runner.invoke(app, ["select", "clear the haze and then brighten the photo", "--json",
                                 "--registry", str(tmp_path / "reg")]))
    assert out["rejected"] is False
    # No diffusion weights here: the runnable built-in plugins are chosen for these tasks.
    assert [(p["id"], p["task"]) for p in out["plugins"]] == [("diffplugin/dehaze-classic", "dehaze"),
                                                              ("diffplugin/lowlight-classic", "lowlight")]
    assert all(set(p) == {"id", "task", "score"} for p in out["plugins"])
    rejected = ok(runner.invoke(app, ["select", "add falling snow for a christmas card", "--json",
                                      "--registry", str(tmp_path / "reg")]))
    assert rejected["plugins"] == [] and rejected["rejected"] is True


def test_eval_selector_reads_plugin_ids_and_task_names(tmp_path: Path) -> None:
    data = tmp_path / "mine.jsonl"
    lines = [{"text": "remove the rain", "expect": ["diffplugin/derain"]},
             {"text": "brighten it and fix the faces", "expect": ["lowlight", "face"]},
             {"text": "turn it into an oil painting", "expect": []},
             {"text": "remove the snow", "expect": ["dehaze"]}]  # wrong on purpose: must count as a miss
    data.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    report = ok(runner.invoke(app, ["eval", "selector", "--data", str(data), "--json",
                                    "--registry", str(tmp_path / "reg")]))
    assert {k: (v["correct"], v["lines"]) for k, v in report["by_kind"].items()} == {
        "single": (1, 2), "compound": (1, 1), "oos": (1, 1)}
    assert [line["correct"] for line in report["lines"]] == [True, True, True, False]
    assert report["lines"][3]["plugins"][0]["task"] == "desnow"


def test_eval_selector_names_a_bad_line(tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "remove the rain", "expect": ["derain"]}\n{"txt": "oops"}\n')
    result = runner.invoke(app, ["eval", "selector", "--data", str(data)])
    assert result.exit_code == 1
    assert "line 2" in result.output


def _few_rows() -> list[Instruction]:
    rows = [Instruction(f"{verb} the {word}", (task,), "single", "train")
            for task, word in zip(TASKS, ("rain", "snow", "haze", "blur", "moire", "glare", "darkness", "face blur"),
                                  strict=True)
            for verb in ("remove", "please get rid of", "fix")]
    rows += [Instruction(text, (), "oos", "train") for text in ("add rain", "write a poem", "crop it square")]
    return rows


def test_training_is_deterministic_and_loads(tmp_path: Path) -> None:
    config = SelectorTrainConfig(steps=2, per_task=2, per_null=2)
    first = train_selector(config, _few_rows(), tmp_path / "a")
    second = train_selector(config, _few_rows(), tmp_path / "b")
    digest = [hashlib.sha256((f / "adapter" / "adapter_model.safetensors").read_bytes()).hexdigest()
              for f in (first, second)]
    assert digest[0] == digest[1]
    other = train_selector(config.model_copy(update={"seed": 1}), _few_rows(), tmp_path / "c")
    assert hashlib.sha256((other / "adapter" / "adapter_model.safetensors").read_bytes()).hexdigest() != digest[0]
    record = json.loads((first / "selector.json").read_text())["training"]
    assert record["steps"] == 2 and record["requests"] == len(_few_rows())
    assert json.loads((first / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        "all-MiniLM-L6-v2"
    loaded = OfflineSelector.load([Candidate("diffplugin/derain", "derain", ())], first)
    assert loaded.select("remove the rain").tasks == ["derain"]


def test_the_examples_can_be_more_than_the_training_requests(tmp_path: Path) -> None:
    extra = [Instruction("the pic is all speckly with rain, fix", ("derain",), "single", "train")]
    folder = train_selector(SelectorTrainConfig(steps=1, per_task=2, per_null=2), _few_rows(), tmp_path / "a",
                            examples=_few_rows() + extra)
    bank = SupportBank.load(folder)
    assert extra[0].text in bank.texts
    record = json.loads((folder / "selector.json").read_text())
    assert record["training"]["requests"] == len(_few_rows())
    assert record["training"]["bank_requests"] == len(_few_rows()) + 1
    assert record["training"]["bank_data_sha256"] != record["training"]["data_sha256"]
    assert record["k"] == SelectorTrainConfig().select_k and record["null_bias"] == SelectorTrainConfig().null_bias


def test_the_shipped_selector_records_the_shipped_data() -> None:
    """The weights were made from the files that ship: editing one without retraining (or rebuilding the bank)
    fails here."""
    from assistant.selector.instructions import EXAMPLE_FILES, training_set
    from assistant.selector.model import WEIGHTS
    from assistant.selector.train import _sha256

    record = json.loads((WEIGHTS / "selector.json").read_text())["training"]
    assert record["data_sha256"] == _sha256(training_set())
    assert record["bank_data_sha256"] == _sha256(training_set(EXAMPLE_FILES))
    assert len(SupportBank.load(WEIGHTS).texts) == record["bank_clauses"]


def test_training_for_ten_steps_runs_and_records_how_to_reproduce_it(tmp_path: Path) -> None:
    """Ten steps once divided by zero in the learning-rate schedule."""
    folder = train_selector(SelectorTrainConfig(steps=10, per_task=2, per_null=2), _few_rows(), tmp_path / "a")
    record = json.loads((folder / "selector.json").read_text())["training"]
    assert record["steps"] == 10 and record["threads"] == torch.get_num_threads()
    assert record["torch"] == torch.__version__


def test_training_refuses_a_label_without_examples(tmp_path: Path) -> None:
    rows = [r for r in _few_rows() if r.tasks != ("face",)] + [Instruction("fix the face", ("face",), "single",
                                                                           "train")]
    with pytest.raises(ValueError, match="face"):
        train_selector(SelectorTrainConfig(steps=1), rows, tmp_path / "x")


def test_train_command_keeps_an_existing_selector(tmp_path: Path) -> None:
    out = tmp_path / "sel"
    out.mkdir()
    (out / "selector.json").write_text("{}")
    result = runner.invoke(app, ["train", "selector", "-o", str(out), "--steps", "1"])
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert (out / "selector.json").read_text() == "{}"


def test_encoder_matches_sentence_transformers() -> None:
    model = load_encoder()
    texts = ["remove the rain", "brighten this dark photo of the harbour at night, please"]
    expected = model.encode(texts, convert_to_tensor=True, normalize_embeddings=True)
    assert torch.allclose(encode(model, texts), expected, atol=1e-5)


# --------------------------------------------------------------------------- with a photo
@pytest.fixture
def paper_models(tmp_path: Path, tiny_base_dir: Path, tiny_pipe) -> tuple[Path, Path]:
    """A models folder as `models pull` leaves it (tiny), and a registry holding one runnable derain plugin."""
    from assistant.paths import models_dir
    from plugins.diffplugin.selector import SelectorHeads
    from plugins.diffplugin.tiny import make_tiny_text_encoder
    from registry.store import Registry

    models = models_dir()
    shutil.copytree(tiny_base_dir, models / "base")
    SelectorHeads(embed_dim=32).save_pretrained(models / "plugin_selector")
    make_tiny_text_encoder(models / "selector_text")
    registry = tmp_path / "reg"
    Registry(registry, models_dir=models).install(diffplugin_folder(tmp_path / "derain-tiny", tiny_pipe))
    return models, registry


def _set_heads(models: Path, agree: bool) -> None:
    """Heads whose projections are constant: every cosine is +1 (`agree`) or -1, whatever the photo or text."""
    from plugins.diffplugin.selector import SelectorHeads

    heads = SelectorHeads.from_pretrained(models / "plugin_selector")
    with torch.no_grad():
        for layer in (heads.proj_v, heads.proj_t):
            layer.weight.zero_()
        heads.proj_v.bias.fill_(1.0)
        heads.proj_t.bias.fill_(1.0 if agree else -1.0)
    heads.save_pretrained(models / "plugin_selector")


@pytest.mark.parametrize("agree", [True, False])
def test_select_with_a_photo_uses_the_papers_selector(paper_models, photo, tmp_path: Path, agree: bool) -> None:
    models, registry = paper_models
    _set_heads(models, agree)
    image = tmp_path / "photo.png"
    photo.save(image)
    out = ok(runner.invoke(app, ["select", "remove the rain and brighten it", "--image", str(image), "--json",
                                 "--registry", str(registry)]))
    assert out["mode"] == "paper+offline"
    chosen = [(p["id"], p["task"]) for p in out["plugins"]]
    if agree:
        assert chosen == [("acme/derain-tiny", "derain"), ("diffplugin/lowlight-classic", "lowlight")]
    else:  # the photo "shows no rain": derain is left out and the note says so; lowlight has no diffusion plugin
        assert chosen == [("diffplugin/lowlight-classic", "lowlight")]
        assert any("derain" in note for note in out["notes"])


def test_select_with_a_photo_but_no_pulled_weights_says_so(photo, tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    photo.save(image)
    out = ok(runner.invoke(app, ["select", "remove the rain", "--image", str(image), "--json",
                                 "--registry", str(tmp_path / "reg")]))
    assert out["mode"] == "offline" and out["plugins"][0]["task"] == "derain"
    assert any("photo was not used" in note for note in out["notes"])
    missing = runner.invoke(app, ["select", "remove the rain", "--image", str(tmp_path / "nope.png")])
    assert missing.exit_code == 1 and "nope.png" in missing.output
