"""What a new user reads: every `--help` page by one convention, the README's command reference agreeing with it,
and the CLI's answers a first session meets (plugin states, --registry on subcommands, --compile off CUDA, the
order policy it replaces)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import click
import PIL.Image
import pytest
from typer.main import get_command
from typer.testing import CliRunner, Result

from assistant.cli import SECTIONS, app
from tests.conftest import photo_array

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def invoke(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args], prog_name="diffplugin")


def command_paths() -> Iterator[tuple[str, ...]]:
    """Every command and group below the root, as the words that name it."""
    def walk(command: click.Command, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        for name, sub in getattr(command, "commands", {}).items():
            yield (*path, name)
            yield from walk(sub, (*path, name))

    yield from walk(get_command(app), ())


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # one line per paragraph, so the tests read the text, not its wrapping


def usage_line(help_text: str) -> str:
    return next(line for line in help_text.splitlines() if "Usage:" in line).split("Usage:", 1)[1].strip()


# --------------------------------------------------------------------------- one convention on every page
@pytest.mark.parametrize("path", [(), *command_paths()], ids=lambda p: " ".join(p) or "root")
def test_every_help_page_follows_the_convention(path: tuple[str, ...]) -> None:
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    page = result.stdout
    assert "<bool>" not in page  # a flag shows no type
    assert "list[" not in page  # a repeatable option or argument shows its element's type
    words = usage_line(page).split()
    assert words[: len(path) + 2] == ["diffplugin", *path, "[OPTIONS]"]
    for word in words[len(path) + 2:]:  # arguments in capitals, an optional one in brackets; never {name}
        assert re.fullmatch(r"\[?[A-Z][A-Z_]*(\.\.\.)?\]?(\.\.\.)?", word), (word, usage_line(page))


@pytest.mark.parametrize(("path", "text"), [
    (("eval", "selector"), '{"text": ..., "expect": [plugin ids or tasks]}; [] means out of scope'),
    (("apply",), "registered plugin id (ns/name[@version])"),
    (("edit",), "openai:MODEL[@URL], ollama:MODEL[@URL]"),
])
def test_square_brackets_in_help_are_text(path: tuple[str, ...], text: str) -> None:
    assert text in invoke(*path, "--help").stdout


def test_docstring_paragraphs_flow_instead_of_breaking_where_the_source_did() -> None:
    page = invoke("batch", "--help").stdout
    # One paragraph of the docstring, hard-wrapped in the source after "so an interrupted batch resumes; a photo
    # that fails": on a wide terminal it is one line.
    assert ("Photos already done (result and plan present) are skipped, so an interrupted batch resumes; a photo "
            "that fails is reported and the others go on.") in page
    lines = [line.strip() for line in page.splitlines()]
    assert 'diffplugin batch holiday/ "remove the haze" -o holiday-fixed/' in lines  # an example keeps its line
    listed = invoke("--help").stdout
    assert "Edit every photo in a folder: resumable, and a photo that fails never stops the others." in listed


def test_argument_names_are_the_usage_names_in_errors_too() -> None:
    result = invoke("edit")
    assert result.exit_code == 2 and "Missing argument 'PHOTO'" in result.output


def test_the_root_help_leads_with_the_everyday_commands() -> None:
    page = invoke("--help").stdout
    panels = [title for title in SECTIONS if f"─ {title} " in page]
    assert panels == list(SECTIONS)
    listed = re.findall(r"^│ (\w[\w-]*) ", page, flags=re.MULTILINE)
    assert listed == [name for names in SECTIONS.values() for name in names]
    assert listed[0] == "edit" and listed.index("models") > listed.index("plugins")
    assert page.index("diffplugin edit") < page.index("models pull")  # the examples: an edit first, offline


def test_every_command_that_edits_takes_the_same_diffusion_options() -> None:
    shared = ["--device", "--base", "--image-encoder", "--steps", "--chain-steps", "--seed", "--short-side",
              "--resize", "--chain-latents", "--judge", "--compile"]
    for command in ("edit", "run", "batch", "apply"):
        page = invoke(command, "--help").stdout
        assert all(option in page for option in shared), command
        assert "Diffusion options" in page
    for command in (("eval", "plugin"),):
        page = invoke(*command, "--help").stdout
        assert all(option in page for option in ("--base", "--image-encoder", "--steps", "--seed", "--device"))


def test_the_diffusion_options_are_declared_once_with_each_commands_defaults() -> None:
    """`@diffusion_options`: the same options in the same order on every command that edits; `apply` judges only
    when asked and takes no --explore."""
    import typer.main

    root = typer.main.get_command(app)

    def diffusion(command: str) -> dict[str, object]:
        return {p.name: p.default for p in root.commands[command].params
                if getattr(p, "rich_help_panel", None) == "Diffusion options"}

    edit = diffusion("edit")
    assert list(edit) == ["device", "base", "image_encoder", "steps", "chain_steps", "seed", "short_side", "resize",
                          "chain_latents", "judge", "explore", "compile"]
    assert edit["judge"] is True and diffusion("run") == diffusion("batch") == edit
    assert diffusion("apply") == {name: False if name == "judge" else default for name, default in edit.items()
                                  if name != "explore"}
    assert [p.name for p in root.commands["edit"].params][-1] == "as_json"


# --------------------------------------------------------------------------- the README agrees with --help
def readme_reference() -> dict[str, str]:
    """The README's command reference: usage line -> description."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Command reference\n", 1)[1].split("\n## ", 1)[0]
    items: list[str] = []
    for line in section.splitlines():
        if re.match(r"\s*- `diffplugin", line):
            items.append(line.strip()[2:])
        elif items and line.startswith("  ") and line.strip():
            items[-1] += " " + line.strip()  # a wrapped item
    found = {}
    for item in items:
        usage, description = re.fullmatch(r"`(diffplugin[^`]*)`: (.*)", item).groups()
        found[usage] = description
    return found


def test_the_readme_command_reference_and_help_agree() -> None:
    reference = readme_reference()
    from_help = {}
    for path in command_paths():
        page = invoke(*path, "--help").stdout
        parent = invoke(*path[:-1], "--help").stdout
        # The description is the command's line in its group's help (the first paragraph of its own).
        line = next(row for row in parent.splitlines() if re.match(rf"│ {re.escape(path[-1])} ", row))
        from_help[usage_line(page)] = line.strip("│ ").split(None, 1)[1].strip()
    assert set(reference) == set(from_help)
    for usage, description in from_help.items():
        assert reference[usage] == description, usage
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    headings = re.findall(r"^\*\*(.+)\*\*$", text.split("## Command reference\n", 1)[1].split("\n## ", 1)[0],
                          flags=re.MULTILINE)
    assert headings == list(SECTIONS)


# --------------------------------------------------------------------------- plugins list and --registry
def test_plugins_subcommands_take_registry_after_the_subcommand_too(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = ROOT / "examples" / "plugins" / "acme-sharpen"
    here, there = tmp_path / "here", tmp_path / "there"
    installed = invoke("plugins", "install", plugin, "--trust", "--registry", here, "--json")
    assert installed.exit_code == 0, installed.output

    def ids(*args: str | Path) -> set[str]:
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        return {p["id"] for p in json.loads(result.stdout)["plugins"]}

    assert "acme/sharpen" in ids("plugins", "list", "--registry", here, "--json")
    assert "acme/sharpen" in ids("plugins", "--registry", here, "list", "--json")  # the group's, as before
    assert "acme/sharpen" not in ids("plugins", "list", "--registry", there, "--json")
    monkeypatch.setenv("DIFFPLUGIN_REGISTRY", str(there))
    assert "acme/sharpen" in ids("plugins", "--registry", here, "list", "--json")  # given beats the environment
    assert "acme/sharpen" not in ids("plugins", "list", "--json")


def test_plugins_list_says_what_a_diffusion_plugin_still_needs_and_fits_80_columns(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from assistant.paths import models_dir
    from plugins.diffplugin.layout import TASK_PLUGIN_WEIGHTS

    def states() -> dict[str, str]:
        result = invoke("plugins", "list", "--json")
        assert result.exit_code == 0, result.output
        return {p["id"]: p["state"] for p in json.loads(result.stdout)["plugins"]}

    assert states()["diffplugin/derain"] == "needs weights"
    assert states()["diffplugin/derain-classic"] == "ready"
    for weight in TASK_PLUGIN_WEIGHTS:  # the plugin's weights pulled, the base model not
        (models_dir() / "plugins" / "derain" / weight).parent.mkdir(parents=True, exist_ok=True)
        (models_dir() / "plugins" / "derain" / weight).write_bytes(b"")
    assert states()["diffplugin/derain"] == "needs base model"
    (models_dir() / "base").mkdir(parents=True)
    assert states()["diffplugin/derain"] == "ready"

    monkeypatch.setenv("COLUMNS", "80")
    table = invoke("plugins", "list")
    assert table.exit_code == 0
    rows = table.stdout.splitlines()
    assert max(len(row.rstrip()) for row in rows) <= 80
    assert "…" not in table.stdout  # nothing cut: cells wrap, or a column is left out and that is said
    assert any("diffplugin/white-balance" in row and "ready" in row for row in rows)
    assert "left out at this width" in table.stderr


# --------------------------------------------------------------------------- --compile and --write-policy
def test_compile_off_cuda_is_one_line_before_anything_loads(tmp_path: Path) -> None:
    photo = tmp_path / "cat.png"
    PIL.Image.fromarray(photo_array("chelsea", 32)).save(photo)
    result = invoke("edit", photo, "brighten it", "-o", tmp_path / "out.png", "--compile", "--device", "cpu")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: --compile needs a CUDA GPU; this run would be on cpu. Leave --compile out."]
    assert not (tmp_path / "out.png").exists()


def test_write_policy_says_which_policy_it_replaced_and_keeps_it(tmp_path: Path) -> None:
    from assistant.planning.policy import OrderPolicy, user_policy_file

    photos = tmp_path / "photos"
    photos.mkdir()
    PIL.Image.fromarray(photo_array("chelsea", 48)).save(photos / "cat.png")
    args = ["eval", "orders", "--degradations", "rain,lowlight", "--photos", photos, "--size", "32",
            "--write-policy"]
    first = invoke(*args, "--json")
    assert first.exit_code == 0, first.output
    written = json.loads(first.stdout)["policy"]
    assert written["replaced"] is None and written["used_by_plans"] and written["file"] == str(user_policy_file())

    again = invoke(*args)
    assert again.exit_code == 0, again.output
    backup = Path(str(user_policy_file()) + ".bak")
    assert (f"(replaced {written['version']}, kept as {backup}); every later plan uses it") in again.stdout
    assert OrderPolicy.load(backup).version == written["version"]
