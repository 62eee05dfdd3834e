"""The plugin manifest: a static `diffplugin.yaml` that says what a plugin is, read without importing its code.

Every field carries a description; `diffplugin plugins schema` prints the JSON Schema generated from this module,
and docs/manifest-schema.json is that output (a test keeps them equal).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from plugins.diffplugin.settings import StartMode
from registry.errors import ManifestError
from registry.kinds import kind_for

MANIFEST_FILE = "diffplugin.yaml"
#: libyaml's safe loader where PyYAML was built with it (10x faster on many manifests), else the pure one.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SCHEMA_VERSION: Final = "1.0"
#: Plugins of this project; no one else may publish under it.
BUILTIN_NAMESPACE = "diffplugin"

#: Bounds on a manifest: far above what a real plugin needs (the largest shipped one is under 1 KiB, with 9
#: examples), far below what exhausts memory when every example is embedded (H2: 10,000 examples, 2.7 GB).
MAX_MANIFEST_BYTES = 64 * 1024
MAX_EXAMPLES = 50
MAX_EXAMPLE_CHARS = 200
MAX_TASKS = 16
MAX_WEIGHTS = 64
MAX_AUTHORS = 20
MAX_OPTIONS = 32
MAX_PRESETS = 8
MAX_VERSION_CHARS = 64
#: Namespaces a plugin may not take, nor one confusable with them (`diffp1ugin`, `diff-plugin`, `0fficial`).
RESERVED_NAMESPACES = (BUILTIN_NAMESPACE, "official", "builtin")

_ID = re.compile(r"[a-z0-9][a-z0-9_-]{1,63}/[a-z0-9][a-z0-9_-]{0,63}")
_TASK = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_ENTRY_POINT = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_NON_COMMERCIAL = re.compile(r"(^|[-\s])NC([-\s]|$)|non[-\s]?commercial", re.IGNORECASE)


def _fullmatch(pattern: re.Pattern[str], value: str, expected: str) -> str:
    if not pattern.fullmatch(value):
        raise ValueError(f"'{value}' is not {expected}")
    return value


def _not_a_number(value: object, what: str) -> object:
    """YAML turns unquoted 2.10 into 2.1 and all-digit hashes into integers: ask for quotes instead."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError(f"YAML read {value!r} as a number: put {what} in quotes")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Author(_Strict):
    name: str = Field(min_length=1, max_length=200, description="Person or organisation.")
    email: str | None = Field(None, max_length=254, description="Contact address.")


class WeightFile(_Strict):
    path: str = Field(max_length=255, description="Path relative to the manifest, with '/' separators. Must end in "
                      ".safetensors.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Lower-case hex SHA-256 of the file.")

    _quoted = field_validator("sha256", mode="before")(lambda cls, value: _not_a_number(value, "the SHA-256"))

    @field_validator("path")
    @classmethod
    def _relative_safetensors(cls, path: str) -> str:
        parts = Path(path).parts
        if path.startswith(("/", "\\")) or ".." in parts or not parts:
            raise ValueError(f"'{path}' must be a relative path inside the plugin folder")
        if not path.endswith(".safetensors"):
            raise ValueError(f"'{path}' is not a .safetensors file; weights are accepted as safetensors only")
        return path


class DiffPluginSpec(_Strict):
    """Run settings of a Diff-Plugin Task-Plugin (TPB + SCB)."""

    base: Literal["sd-1.x"] = Field("sd-1.x", description="Base-model family the plugin was trained on.")
    start: StartMode = Field(
        "noised-input", description="'noised-input': start from the noised input latent; 'noise': pure noise."
    )
    num_inference_steps: int = Field(20, ge=1, le=1000, description="Default denoising steps.")
    time_threshold: int = Field(960, ge=0, le=1000, description="Timesteps at or above this use the noised input.")


def _value_kind(value: str | int | float | bool) -> str:
    """'flag', 'number' or 'text': what a preset's value must share with the option's default."""
    return "flag" if isinstance(value, bool) else "number" if isinstance(value, int | float) else "text"


#: An option's value as a manifest can state it.
OptionValue = Annotated[str, Field(max_length=1000)] | int | float | bool


class PythonSpec(_Strict):
    """A plugin that is plain code: a callable taking a PIL image (and options) and returning one."""

    entry_point: str = Field(max_length=200, description="'module:callable'; the module sits in the plugin folder "
                             "or is installed.")
    options: dict[Annotated[str, Field(max_length=64)], OptionValue] = (
        Field(default_factory=dict, max_length=MAX_OPTIONS, description="Default keyword options passed to the "
              "callable."))
    presets: dict[Annotated[str, Field(max_length=64)], dict[Annotated[str, Field(max_length=64)], OptionValue]] = (
        Field(default_factory=dict, max_length=MAX_PRESETS, description="Named sets of options to try, in order, "
              "when the judge finds the defaults made a photo worse (before a milder mix), e.g. {'spare-whites': "
              "{'tolerance': 0.4}}; each overrides options declared above."))

    _entry_point = field_validator("entry_point")(
        lambda cls, value: _fullmatch(_ENTRY_POINT, value, "of the form 'module:callable'"))

    @model_validator(mode="after")
    def _presets_override_options(self) -> PythonSpec:
        for name, overrides in self.presets.items():
            if not _TASK.fullmatch(name):
                raise ValueError(f"preset name '{name}' must start with a lower case letter or digit, followed by "
                                 "those, '-' and '_'")
            if not overrides:
                raise ValueError(f"preset '{name}' sets no option")
            if unknown := sorted(set(overrides) - set(self.options)):
                raise ValueError(f"preset '{name}' sets {', '.join(map(repr, unknown))}, which 'options' does not "
                                 "declare; declare each option a preset changes, with its default")
            for option, value in overrides.items():
                if _value_kind(value) != _value_kind(self.options[option]):
                    raise ValueError(f"preset '{name}' sets '{option}' to {value!r}, a {_value_kind(value)}; its "
                                     f"default {self.options[option]!r} is a {_value_kind(self.options[option])}")
        return self


class PluginManifest(_Strict):
    """What a plugin is and how to run it. One `diffplugin.yaml` per plugin."""

    schema_version: Literal["1.0"] = Field(SCHEMA_VERSION, description="Version of this manifest format.")
    id: str = Field(description="Namespaced id 'namespace/name': lower case, digits, '-' and '_'.")
    version: str = Field(max_length=MAX_VERSION_CHARS, description="Plugin version (PEP 440, e.g. 1.2.0).")
    name: str = Field(min_length=1, max_length=80, description="Display name.")
    description: str = Field(min_length=10, max_length=2000, description="What the plugin does, for people "
                             "and for search.")
    tasks: list[str] = Field(min_length=1, max_length=MAX_TASKS, description="Task ids it performs, e.g. ['derain'].")
    examples: list[Annotated[str, Field(max_length=MAX_EXAMPLE_CHARS)]] = Field(
        min_length=3, max_length=MAX_EXAMPLES,
        description="Example requests a user might type; used by the selector and by search.",
    )
    kind: Literal["diffplugin", "python"] = Field(description="'diffplugin' (TPB + SCB weights) or 'python' (code).")
    diffplugin: DiffPluginSpec | None = Field(None, description="Required when kind is 'diffplugin'.")
    python: PythonSpec | None = Field(None, description="Required when kind is 'python'.")
    weights: list[WeightFile] = Field(default_factory=list, max_length=MAX_WEIGHTS,
                                      description="Weight files with their SHA-256.")
    weights_source: Literal["folder", "models-pull"] = Field(
        "folder", description="'folder': the weights listed above sit beside the manifest; 'models-pull': "
        "`diffplugin models pull` fetches them (this project's built-in official plugins only).")
    license: str = Field(min_length=1, max_length=100, description="SPDX licence id of the weights and code, e.g. "
                         "Apache-2.0.")
    authors: list[Author] = Field(min_length=1, max_length=MAX_AUTHORS, description="Who made it.")
    homepage: str | None = Field(None, max_length=500, description="Project page (http or https).")
    gpu_memory_mb: int | None = Field(None, ge=0, description="Estimated extra GPU memory when loaded, in MiB.")

    _id = field_validator("id")(
        lambda cls, value: _fullmatch(_ID, value, "'namespace/name' (lower case letters, digits, '-' and '_')"))

    _quoted_version = field_validator("version", mode="before")(lambda cls, value: _not_a_number(value, "the version"))

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        try:
            normalised = str(Version(value))  # so "1.0" and "1.0.0" or " 1.0" cannot sit side by side
        except InvalidVersion:
            raise ValueError(f"'{value}' is not a valid version (e.g. 1.0.0)") from None
        if len(normalised) > MAX_VERSION_CHARS:  # it names a folder: a file system refuses long names
            raise ValueError(f"the version may have at most {MAX_VERSION_CHARS} characters")
        return normalised

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, value: list[str]) -> list[str]:
        bad = [t for t in value if not _TASK.fullmatch(t)]
        if bad:
            raise ValueError(f"task ids must be lower case words: {', '.join(bad)}")
        return value

    @field_validator("examples")
    @classmethod
    def _examples(cls, value: list[str]) -> list[str]:
        if any(not e.strip() for e in value):
            raise ValueError("examples must not be empty strings")
        return value

    @field_validator("homepage")
    @classmethod
    def _homepage(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError(f"'{value}' is not an http(s) address")
        return value

    @model_validator(mode="after")
    def _kind_matches(self) -> PluginManifest:
        # Each kind has a table named after it; a manifest fills its own kind's table and no other.
        tables = {"diffplugin": self.diffplugin, "python": self.python}
        others = [name for name, table in tables.items() if name != self.kind and table is not None]
        if tables.get(self.kind) is None or others:
            unwanted = " and ".join(f"no '{name}' table" for name in tables if name != self.kind)
            raise ValueError(f"kind '{self.kind}' needs a '{self.kind}' table and {unwanted}")
        if problem := kind_for(self).manifest_problem(self):
            raise ValueError(problem)
        paths = [w.path for w in self.weights]
        if len(set(paths)) != len(paths):
            raise ValueError("weights lists a file twice")
        return self

    # ----------------------------------------------------------------- derived facts
    @property
    def namespace(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def non_commercial(self) -> bool:
        """True for licences that forbid commercial use (e.g. CC-BY-NC-SA-4.0, the official weights')."""
        return bool(_NON_COMMERCIAL.search(self.license))

    def search_texts(self) -> list[str]:
        """What the search index embeds for this plugin: its description, its tasks, each example."""
        return [f"{self.name}. {self.description}", "tasks: " + ", ".join(self.tasks), *self.examples]


def _distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


#: Digits read as the letters they resemble, 'i' as 'l', separators dropped: `diffp1ugin` and `diff-plugin` read
#: as `diffplugin` does.
_LOOKALIKE = str.maketrans({"0": "o", "1": "l", "i": "l", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b",
                            "9": "g", "-": None, "_": None})


def reserved_lookalike(namespace: str) -> str | None:
    """The reserved namespace that `namespace` is or could be mistaken for, else None: the same after reading
    digits as letters and dropping separators, one letter off (two for `diffplugin`), or containing `diffplugin`."""
    skeleton = namespace.lower().translate(_LOOKALIKE)
    for reserved in RESERVED_NAMESPACES:
        target = reserved.translate(_LOOKALIKE)
        if _distance(skeleton, target) <= (2 if reserved == BUILTIN_NAMESPACE else 1):
            return reserved
        if reserved == BUILTIN_NAMESPACE and target in skeleton:
            return reserved
    return None


def parse_manifest(text: str, source: str | Path = MANIFEST_FILE) -> PluginManifest:
    """Validate manifest YAML; a `ManifestError` names the file and the first field at fault."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestError(source, None, f"is {len(text):,} characters long; a manifest may have at most "
                                          f"{MAX_MANIFEST_BYTES:,} (keep examples to {MAX_EXAMPLES} short requests)")
    try:
        data = yaml.load(text, Loader=_SafeLoader)
    except yaml.YAMLError as err:
        raise ManifestError(source, None, f"not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ManifestError(source, None, "must be a YAML mapping of fields")
    return validate_manifest(data, source)


def validate_manifest(data: dict[str, Any], source: str | Path = MANIFEST_FILE) -> PluginManifest:
    """Validate manifest fields; a `ManifestError` names the file and the first field at fault."""
    try:
        return PluginManifest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        message = first["msg"].removeprefix("Value error, ")
        raise ManifestError(source, field, message) from None


def load_manifest(folder_or_file: str | Path) -> PluginManifest:
    """Read `diffplugin.yaml` (or the given file). Imports no plugin code."""
    path = Path(folder_or_file)
    if path.is_dir():
        path = path / MANIFEST_FILE
    if not path.is_file():
        raise ManifestError(path, None, "file not found: a plugin folder needs a diffplugin.yaml manifest")
    try:
        with path.open("rb") as f:  # read no more than a manifest may hold, however large the file is
            data = f.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(path, None, f"is larger than {MAX_MANIFEST_BYTES:,} bytes, the most a manifest may "
                                            f"be (keep examples to {MAX_EXAMPLES} short requests)")
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(path, None, f"cannot be read as UTF-8 text ({err})") from None
    return parse_manifest(text, path)


def dump_manifest(manifest: PluginManifest) -> str:
    """YAML for `manifest`, fields in declaration order, fields left at their defaults left out."""
    data = {"schema_version": manifest.schema_version, **manifest.model_dump(mode="json", exclude_defaults=True)}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def manifest_schema() -> dict[str, Any]:
    return PluginManifest.model_json_schema()
