"""A plan is data: ordered steps, each a plugin with its parameters and the reason it is there.

Plans load and save as YAML or JSON (by file suffix), so a user can read, change and replay them.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

PLAN_SCHEMA = "1.0"
Source = Literal["selector", "planner", "llm", "user", "detector"]


class PlanError(ValueError):
    """A plan file that cannot be read or does not describe a plan; the message names the file and field."""


class Try(BaseModel):
    """Something the judge looked at for a step when the plan ran."""

    plugin: str
    mix: float = Field(1.0, gt=0, le=1)
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

    def save(self, path: str | Path) -> Path:
        """Write atomically (a partial plan file never replaces a good one); JSON for .json, else YAML."""
        path = Path(path)
        write_atomic(path, self.dumps("json" if path.suffix.lower() == ".json" else "yaml").encode())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise PlanError(f"cannot read plan {path}: {err.strerror or err}") from None
        try:
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as err:
            raise PlanError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: "
                            f"{str(err).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise PlanError(f"{path}: a plan is a mapping with `steps:`, not {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise PlanError(f"{path}: {where}: {first['msg']}") from None


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; done once, at import, before any thread starts
    os.umask(mask)
    return mask


_UMASK = _umask()


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename over it: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        # mkstemp makes the file private (0600); a photo or plan should get the permissions any new file gets.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
