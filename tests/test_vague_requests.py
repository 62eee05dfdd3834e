"""Requests that name no task ("make it pop") use the photo; without one the plan says it needs one; parts of a
request that matched nothing are named; and the chat asks one question about what it sees instead of guessing."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assistant.planning import Plan
from assistant.planning.planner import LOW_CONFIDENCE, Planner, is_filler, is_general_ask, names_no_task
from assistant.planning.policy import OrderPolicy
from assistant.selector.clauses import split_clauses
from assistant.selector.model import SelectedPlugin, Selection

ROOT = Path(__file__).resolve().parent.parent
DUSK = ROOT / "examples" / "photos" / "rocket-foggy-dusk.jpg"  # the detector sees its low light
VAGUE = ["make it pop", "I want this image to look good", "Fix my photo, it's all messed up", "fix it",
         "improve this"]


@dataclass
class ScriptedSelector:
    """A selector that reads each clause's task and confidence from a script: tests of the planner's rules
    that do not depend on what the trained selector makes of a phrasing."""

    script: dict[str, tuple[str, float]]  # clause -> (task, confidence); a clause not in it selects nothing
    plugins: dict[str, str]

    def select(self, text: str) -> Selection:
        clauses = split_clauses(text)
        chosen: dict[str, SelectedPlugin] = {}
        for index, clause in enumerate(clauses):
            task, score = self.script.get(clause, (None, 0.0))
            if task is not None and task not in chosen:
                chosen[task] = SelectedPlugin(self.plugins[task], task, score, index)
        return Selection(list(chosen.values()), clauses)


@pytest.fixture
def scripted(tmp_path: Path):
    from assistant.paths import open_registry

    registry = open_registry(tmp_path / "reg")
    plugins = {}
    for status in registry.plugins():
        for task in status.manifest.tasks:
            plugins.setdefault(task, status.id)

    def planner(**script: tuple[str, float]) -> Planner:
        return Planner(registry, ScriptedSelector({k.replace("_", " "): v for k, v in script.items()}, plugins),
                       OrderPolicy.load())

    return planner


@pytest.fixture(scope="module")
def dusk():
    from plugins.data.photos import load_photo

    return load_photo(DUSK)


# --------------------------------------------------------------------------- which requests name no task
@pytest.mark.parametrize("text", [*VAGUE, "Can you make this picture look nicer?", "work your magic",
                                  "clean it up please", "it looks bad"])
def test_asks_for_a_better_photo_name_no_task(text: str) -> None:
    selection = Selection([], split_clauses(text))
    assert names_no_task(selection), split_clauses(text)


@pytest.mark.parametrize("text", ["that looks great, thanks", "does this look good?", "thanks", "make it brighter",
                                  "pls remvoe teh fogg", "order me a pizza"])
def test_praise_politeness_and_named_tasks_are_not_general_asks(text: str) -> None:
    assert not names_no_task(Selection([], split_clauses(text)))


def test_no_request_in_the_training_data_that_names_a_task_reads_as_naming_none() -> None:
    """The word lists may only hold words that name no task: every labelled request keeps its selector plan."""
    for name in ("instructions.jsonl", "instructions_train_extra.jsonl"):
        for line in (ROOT / "assistant" / "selector" / "data" / name).read_text().splitlines():
            row = json.loads(line)
            if row["tasks"]:
                asking = [c for c in split_clauses(row["text"]) if not is_filler(c)]
                assert not all(is_general_ask(c) for c in asking), row["text"]


def test_a_sure_selection_stands_even_for_general_words() -> None:
    """An installed plugin may list "make it pop" among its examples: then the selector is sure, and right."""
    sure = Selection([SelectedPlugin("acme/pop", "pop", LOW_CONFIDENCE + 0.1, 0)], ["make it pop"])
    guess = Selection([SelectedPlugin("diffplugin/saturation", "saturation", LOW_CONFIDENCE - 0.1, 0)],
                      ["make it pop"])
    assert not names_no_task(sure) and names_no_task(guess)


# --------------------------------------------------------------------------- the planner's rules
def test_a_guess_for_a_request_that_names_no_task_gives_way_to_the_photo(scripted, dusk) -> None:
    planner = scripted(make_it_pop=("saturation", 0.4))
    with_photo = planner.plan("make it pop", dusk)
    assert with_photo.source == "detector" and "lowlight" in [s.task for s in with_photo.steps]
    assert all(s.reason.startswith("detected:") for s in with_photo.steps) and not with_photo.needs_photo
    without = planner.plan("make it pop")
    assert without.steps == [] and without.needs_photo and "--image" in without.notes[-1]
    assert scripted(make_it_pop=("saturation", 0.9)).plan("make it pop", dusk).steps[0].task == "saturation"


def test_a_rejected_request_that_asks_for_a_fix_uses_the_photo(scripted, dusk) -> None:
    planner = scripted()
    plan = planner.plan("it's for my mum, fix it", dusk)
    assert plan.source == "detector" and plan.steps
    assert planner.plan("it's for my mum, fix it").needs_photo
    refused = planner.plan("write me a poem", dusk)
    assert refused.steps == [] and not refused.needs_photo and "no plugin does that" in refused.notes[-1]


def test_parts_that_matched_nothing_are_named(scripted, dusk) -> None:
    planner = scripted(remove_the_rain=("derain", 0.99), it_is_foggy=("dehaze", 0.9), clear_the_fog=("dehaze", 0.95))
    plan = planner.plan("remove the rain and order me a pizza, thanks")
    assert [s.task for s in plan.steps] == ["derain"]
    assert plan.unplaced == ["order me a pizza"]
    assert 'I could not place: "order me a pizza"' in plan.notes[-1]
    # A part naming a task already planned, politeness and a general ask are all placed.
    plan = planner.plan("it is foggy, clear the fog and fix it for me please")
    assert [s.task for s in plan.steps] == ["dehaze"] and plan.unplaced == []
    plan = planner.plan("remove the rain and make it pop", dusk)  # a named task: the photo has no say
    assert plan.source == "selector" and [s.task for s in plan.steps] == ["derain"] and plan.unplaced == []


def test_plan_files_without_the_new_fields_still_load(tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"
    old.write_text("schema_version: '1.0'\nrequest: remove the rain\nsteps:\n- plugin: diffplugin/derain\n"
                   "  task: derain\nsource: selector\norder: single\n")
    plan = Plan.load(old)
    assert plan.needs_photo is False and plan.unplaced == []
    assert {"needs_photo", "unplaced"} <= set(plan.to_json())


# --------------------------------------------------------------------------- with the trained selector
@pytest.fixture(scope="module")
def planner():
    from assistant.planning import load_planner

    return load_planner()


def test_vague_requests_need_the_photo(planner, dusk) -> None:
    for text in VAGUE:
        without = planner.plan(text)
        assert without.needs_photo and without.steps == [], (text, without.to_json())
        with_photo = planner.plan(text, dusk)
        assert with_photo.source == "detector" and with_photo.steps, (text, with_photo.to_json())


def test_explicit_requests_are_untouched(planner) -> None:
    """Every request of the selector's validation split that names tasks is planned from the selector, needs no
    photo and leaves nothing out (a selection error may change the tasks, never where they come from)."""
    rows = [json.loads(line) for line in
            (ROOT / "assistant" / "selector" / "data" / "instructions.jsonl").read_text().splitlines()]
    val = [row for row in rows if row["split"] == "val" and row["tasks"]]
    assert len(val) > 50
    for row in val:
        plan = planner.plan(row["text"])
        assert plan.source == "selector" and not plan.needs_photo, (row["text"], plan.to_json())


def test_an_out_of_scope_part_is_named_by_the_trained_selector(planner) -> None:
    plan = planner.plan("remove the rain and order me a pizza")
    assert [s.task for s in plan.steps] == ["derain"] and plan.unplaced == ["order me a pizza"], plan.to_json()


def test_plan_json_says_when_it_needs_a_photo() -> None:
    from assistant.cli import app

    runner = CliRunner()
    vague = runner.invoke(app, ["plan", "--json", "make it pop"])
    assert vague.exit_code == 0, vague.output
    data = json.loads(vague.stdout)
    assert data["needs_photo"] is True and data["steps"] == []
    explicit = json.loads(runner.invoke(app, ["plan", "--json", "remove the haze"]).stdout)
    assert explicit["needs_photo"] is False and explicit["unplaced"] == []
    with_photo = json.loads(runner.invoke(app, ["plan", "--json", "make it pop", "--image", str(DUSK)]).stdout)
    assert with_photo["needs_photo"] is False and with_photo["source"] == "detector"


# --------------------------------------------------------------------------- the chat asks
def chat(planner: Planner, photo: Path | None):
    from assistant.chat.session import ChatSession
    from assistant.chat.store import ConversationStore
    from assistant.paths import data_dir

    session = ChatSession.start(ConversationStore(data_dir() / "chat"), planner.registry, photo)
    session.planner = planner
    return session


def test_the_chat_asks_what_to_fix_and_plans_the_answer(scripted) -> None:
    session = chat(scripted(), DUSK)
    asked = session.propose("make it pop")
    assert asked.ask and asked.plan is None and session.pending is None
    assert asked.text.startswith("I see low light") and asked.text.endswith("?"), asked.text
    proposed = session.propose("yes please")
    assert "lowlight" in [s.task for s in proposed.plan.steps] and session.pending is proposed.plan
    assert "Here is my plan" in proposed.text and not proposed.ask

    session.propose("fix it")
    assert "OK, I'll leave the photo" in session.propose("no thanks").text and session.pending is None


def test_an_answer_in_words_is_planned_without_a_second_question(scripted) -> None:
    session = chat(scripted(remove_the_rain=("derain", 0.99)), DUSK)
    session.propose("fix my photo")
    reply = session.propose("remove the rain")
    assert [s.task for s in reply.plan.steps] == ["derain"]
    session.propose("fix my photo")
    again = session.propose("just make it nice")  # vague again: planned from the photo, not asked twice
    assert again.plan is not None and again.plan.source == "detector"


def test_a_guessed_step_is_asked_about_and_the_sure_ones_stay(scripted) -> None:
    session = chat(scripted(remove_the_rain=("derain", 0.99), make_it_vivid=("saturation", 0.4)), DUSK)
    asked = session.propose("remove the rain and make it vivid")
    assert asked.ask and session.pending is None
    assert 'not sure what you meant by "make it vivid"' in asked.text
    assert "I'll remove the rain. I see low light." in asked.text and "make the colours more vivid" in asked.text
    assert asked.text.endswith("or both?"), asked.text
    only_sure = session.propose("neither")
    assert [s.task for s in only_sure.plan.steps] == ["derain"]
    session.propose("remove the rain and make it vivid")
    everything = session.propose("both")
    assert {s.task for s in everything.plan.steps} == {"derain", "lowlight", "saturation"}
    assert everything.plan.order == "policy" and "not sure" not in everything.text
    assert any("no diffusion weights installed for diffplugin/derain" in n for n in everything.plan.notes)


def test_a_sure_plan_is_proposed_at_once_and_without_a_photo_the_chat_says_what_it_needs(scripted) -> None:
    planner = scripted(remove_the_rain=("derain", 0.99))
    session = chat(planner, DUSK)
    reply = session.propose("remove the rain")
    assert not reply.ask and [s.task for s in reply.plan.steps] == ["derain"]
    clean = chat(planner, ROOT / "examples" / "photos" / "chelsea.jpg")  # the detector finds nothing to fix
    reply = clean.propose("improve this")
    assert reply.ask and reply.text.startswith("I see nothing in this photo") and clean.pending is None
    blind = chat(planner, None)
    reply = blind.propose("make it pop")
    assert reply.plan is None and "/open PATH" in reply.text and blind.pending is None


def test_the_chat_screen_shows_the_question_and_then_the_plan(tmp_path: Path) -> None:
    """Through the app, with the trained selector: a vague request gets a question, not a plan; "both" gets
    the plan."""
    from assistant.chat.app import ChatApp
    from assistant.chat.session import ChatSession
    from assistant.chat.store import ConversationStore
    from assistant.chat.widgets import PlanTable
    from assistant.paths import data_dir, open_registry
    from tests.test_chat import SIZE, log_text, ready, say

    session = ChatSession.start(ConversationStore(data_dir() / "chat"), open_registry(None), DUSK)

    async def scenario() -> None:
        app = ChatApp(session, renderer="halfcell")
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot, app.screen)
            await say(pilot, "Fix my photo, it's all messed up")
            table = app.screen.query_one(PlanTable)
            assert "I see low light" in log_text(app.screen) and not table.display
            await say(pilot, "yes")
            assert session.pending is not None and table.row_count == len(session.pending.steps) >= 1
            assert "Here is my plan" in log_text(app.screen)
            app.exit()

    asyncio.run(scenario())
