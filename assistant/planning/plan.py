"""A plan is data: ordered steps, each a plugin with its parameters and the reason it is there.

Plans load and save as YAML or JSON (by file suffix), so a user can read, change and replay them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

from plugins.atomic_files import write_atomic
from plugins.errors import DiffPluginError
from plugins.quoting import shown

PLAN_SCHEMA = "1.0"
Source = Literal["selector", "planner", "llm", "user", "detector"]

# A plan is a few kilobytes, four levels deep (plan, steps, step, params). The bounds are far above any real plan
# and far below what could hurt: a deeper or larger file is refused before it is turned into objects.
#: Largest plan file read.
MAX_PLAN_BYTES = 1 << 20
#: Deepest nesting of lists and mappings in a plan.
MAX_PLAN_DEPTH = 16
#: Most values (scalars, lists and mappings together) in a plan.
MAX_PLAN_NODES = 100_000


class PlanError(DiffPluginError, ValueError):
    """A plan file that cannot be read or does not describe a plan; the message names the file and field."""


def path_ref_problem(ref: str) -> str | None:
    """Why a plan step's plugin is refused when it is a path: a plan names registered plugins only, since a folder
    would run without the registry's checks (hashes, trust) and a relative path means another thing elsewhere."""
    if not (Path(ref).is_absolute() or ref.startswith((".", "~")) or ref.count("/") > 1 or "\\" in ref):
        return None
    return (f"{shown(ref)} is a path, not a registered plugin id (namespace/name): a plan runs registered plugins "
            "only. Install the folder (`diffplugin plugins install FOLDER`) and name its id, or run the folder with "
            "`diffplugin apply -p FOLDER`")


class _Shape(ValueError):
    """A plan refused for its shape (aliases, depth, size) while it was read."""


class _PlanLoader(yaml.SafeLoader):
    """Safe YAML without aliases and with bounded nesting, checked while nodes are composed (before any object
    exists). An alias makes one value stand for many (`*a` nested ten deep is a billion values in 600 bytes), and
    composing is recursive (100,000 levels would overflow the stack)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            raise _Shape(f"line {mark.line + 1}: YAML aliases (*name) are not allowed in a plan; write the value "
                         "out in full")
        self.nodes += 1
        if self.nodes > MAX_PLAN_NODES:
            raise _Shape(f"more than {MAX_PLAN_NODES:,} values; a plan is much smaller")
        if self.depth >= MAX_PLAN_DEPTH:
            raise _Shape(f"line {mark.line + 1}: nested deeper than {MAX_PLAN_DEPTH} levels; a plan is much "
                         "flatter")
        self.depth += 1
        try:
            # PyYAML passes a mapping's key node or a sequence position; its stubs say int only
            return super().compose_node(parent, index)  # type: ignore[arg-type]
        finally:
            self.depth -= 1


def load_yaml(text: str) -> object:
    """Safe YAML with the plan's bounds (no aliases, bounded depth and size): for any YAML a user hands us."""
    return yaml.load(text, Loader=_PlanLoader)


def _check_shape(data: object) -> None:
    """The bounds `_PlanLoader` keeps, for data parsed another way (JSON)."""
    todo, nodes = [(data, 1)], 0
    while todo:
        value, depth = todo.pop()
        nodes += 1
        if nodes > MAX_PLAN_NODES:
            raise _Shape(f"more than {MAX_PLAN_NODES:,} values; a plan is much smaller")
        if depth > MAX_PLAN_DEPTH:
            raise _Shape(f"nested deeper than {MAX_PLAN_DEPTH} levels; a plan is much flatter")
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        todo.extend((child, depth + 1) for child in children)


class Try(BaseModel):
    """Something the judge looked at for a step when the plan ran."""

    plugin: str
    mix: float = Field(1.0, gt=0, le=1)
    preset: str | None = Field(None, description="The plugin's preset (named options) this try ran with, if any.")
    verdict: Literal["kept", "ok", "worse", "cannot help", "could not load"]
    better: float | None = Field(None, ge=0, le=1, description="The judge's calibrated chance that it helped.")
    reasons: list[str] = Field(default_factory=list)


class Step(BaseModel):
    plugin: str = Field(description="Registered plugin id, e.g. diffplugin/dehaze-classic.")
    task: str = Field(description="The task this step does, e.g. dehaze.")
    params: dict[str, Any] = Field(default_factory=dict, description="Options passed to the plugin.")
    mix: float = Field(1.0, gt=0, le=1, description="How much of the plugin's output is kept: 1 all of it, 0.5 "
                                                    "half-way between the step's input and its output.")
    reason: str = Field("", description="Why this step is here, in words.")
    confidence: float | None = Field(None, ge=0, le=1, description="How sure the planner was that it is wanted.")
    tries: list[Try] = Field(default_factory=list, description="What the judge tried when the plan ran, and what "
                                                               "it kept (a replay runs what was kept).")


class Plan(BaseModel):
    schema_version: str = PLAN_SCHEMA
    request: str | None = Field(None, description="What the user asked for.")
    steps: list[Step] = Field(default_factory=list)
    source: Source = "planner"
    order: Literal["user", "policy", "single", "none", "quality-check"] = Field(
        "policy", description="Where the order came from: the user's words, the order policy, or only one step "
                              "('quality-check': reordered by an older version's quality check).")
    policy_version: str | None = None
    notes: list[str] = Field(default_factory=list, description="What the user should know (low confidence, "
                                                               "fallbacks, missing weights).")
    needs_photo: bool = Field(False, description="The request names no task (\"make it pop\"): only a photo can "
                                                 "say what to do, and none was given.")
    unplaced: list[str] = Field(default_factory=list, description="Parts of the request that matched no task, "
                                                                  "in the user's words.")
    dropped: list[Step] = Field(default_factory=list, description="Steps the judge dropped when the plan ran "
                                                                  "(every try made the photo worse), with the tries.")
    versions: dict[str, str] = Field(default_factory=dict, description="diffplugin's and each plugin's version, "
                                                                       "recorded when the plan runs.")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def dumps(self, fmt: Literal["yaml", "json"] = "yaml") -> str:
        data = self.to_json()
        if fmt == "json":
            return json.dumps(data, indent=2) + "\n"
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path, overwrite: bool = True) -> Path:
        """Write atomically (a partial plan file never replaces a good one); JSON for .json, else YAML. Without
        `overwrite`, an existing file is never replaced (FileExistsError)."""
        path = Path(path)
        write_atomic(path, self.dumps("json" if path.suffix.lower() == ".json" else "yaml").encode(), overwrite)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Read a plan file, refusing one larger or deeper than a plan could be (see `MAX_PLAN_BYTES`) and YAML
        aliases; a problem is one `PlanError` line that names the file."""
        path = Path(path)
        fmt: Literal["YAML", "JSON"] = "JSON" if path.suffix.lower() == ".json" else "YAML"
        try:
            with path.open("rb") as handle:
                raw = handle.read(MAX_PLAN_BYTES + 1)
        except OSError as err:
            raise PlanError(f"cannot read plan {path}: {err.strerror or err}") from None
        if len(raw) > MAX_PLAN_BYTES:
            raise PlanError(f"{path}: larger than {MAX_PLAN_BYTES // 1024} KiB; a plan is a few kilobytes. Is it "
                            "the right file?")
        return cls.parse(raw, fmt, str(path))

    @classmethod
    def parse(cls, raw: bytes, fmt: Literal["YAML", "JSON"], where: str) -> Plan:
        """A plan from its text, with the bounds of `load`; `where` names it in errors (a file, a photo)."""
        if len(raw) > MAX_PLAN_BYTES:
            raise PlanError(f"{where}: larger than {MAX_PLAN_BYTES // 1024} KiB; a plan is a few kilobytes")
        try:
            text = raw.decode("utf-8")
            if fmt == "JSON":
                try:
                    data = json.loads(text)
                except RecursionError:
                    raise _Shape(f"nested deeper than {MAX_PLAN_DEPTH} levels; a plan is much flatter") from None
                _check_shape(data)
            else:
                data = load_yaml(text)
        except _Shape as err:
            raise PlanError(f"{where}: {err}") from None
        except UnicodeDecodeError:
            raise PlanError(f"{where}: not a text file (plans are UTF-8 {fmt})") from None
        except (ValueError, yaml.YAMLError) as err:
            raise PlanError(f"{where}: not valid {fmt}: {str(err).splitlines()[0][:200]}") from None
        if not isinstance(data, dict):
            raise PlanError(f"{where}: a plan is a mapping with `steps:`, not {type(data).__name__}")
        try:
            plan = cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            location = ".".join(str(part)[:60] for part in first["loc"])  # a key can be as long as the file
            raise PlanError(f"{where}: {location}: {first['msg']}") from None
        for index, step in enumerate(plan.steps):
            problem = path_ref_problem(step.plugin)
            if problem:
                raise PlanError(f"{where}: steps.{index}.plugin: {problem}")
        return plan
