"""Plugin kinds: what differs between a manifest's `kind`s, each decided by the kind itself.

The registry knows manifests, files, trust and search; a kind knows its own manifest table, the files its plugins
must ship, where `diffplugin models pull` leaves its weights and how to build a runnable plugin from a checked
folder. The built-in kinds register themselves where they live: `diffplugin` in `plugins/diffplugin/kind.py`,
`python` (code) in `registry/runtime.py`, the only place plugin code is imported. Both are imported on the first
lookup, never when the registry is imported, so listing plugins imports neither torch nor plugin code.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeAlias

from registry.errors import RegistryError

if TYPE_CHECKING:
    import torch

    from plugins.diffplugin.plugin import TaskPlugin
    from registry.discover import PluginRecord
    from registry.manifest import PluginManifest
    from registry.runtime import PythonPlugin

    #: What the executor can run: a Task-Plugin inside the diffusion pipeline, or a function on an image. A kind
    #: loads its plugins into one of the two.
    LoadedPlugin: TypeAlias = "TaskPlugin | PythonPlugin"


#: A value of a plugin option, as a manifest may declare it.
OptionValue = str | int | float | bool


class UnknownKind(RegistryError):
    """A manifest names a kind no code here handles."""


class PluginKind(Protocol):
    """One plugin kind, as the registry and the executor need it."""

    #: The manifest's `kind` value.
    name: str
    #: Its plugins run their own code on the user's machine: installing or running a copy that is not built in
    #: needs the user's trust.
    runs_code: bool
    #: Its plugins run inside the diffusion pipeline on the base model: preferred for a task they serve, and
    #: not ready until the base model is pulled.
    diffusion: bool

    def manifest_problem(self, manifest: PluginManifest) -> str | None:
        """Why `manifest` breaks a rule of this kind, else None (that it fills its own table and no other is
        checked for every manifest, in `PluginManifest`)."""
        ...

    def check_files(self, manifest: PluginManifest, folder: Path) -> None:
        """What an install checks about this kind's files in `folder` (the staged copy), beyond what every plugin
        gets; raises `InstallRefused` naming the file or field."""
        ...

    def pulled_folder(self, manifest: PluginManifest, models_dir: Path) -> Path:
        """Where `diffplugin models pull` leaves the weights of a built-in plugin that takes them from there."""
        ...

    def pulled_problems(self, manifest: PluginManifest, models_dir: Path) -> list[str]:
        """What keeps such a plugin from running with the models folder as it is (e.g. weights not pulled)."""
        ...

    def options(self, manifest: PluginManifest) -> dict[str, OptionValue]:
        """The options the manifest declares with their defaults (the ones a plan may set)."""
        ...

    def load(self, record: PluginRecord, weights_folder: Path, dtype: torch.dtype | None) -> LoadedPlugin:
        """A runnable plugin from a record the registry has found runnable; weights are checked (SHA-256) on the
        bytes that are used."""
        ...


_KINDS: dict[str, PluginKind] = {}
#: Modules that register the built-in kinds when imported.
_BUILTIN_KIND_MODULES = ("plugins.diffplugin.kind", "registry.runtime")


def register_kind(kind: PluginKind) -> PluginKind:
    """Make manifests of `kind.name` dispatch to `kind`. A second kind under a taken name is refused."""
    existing = _KINDS.setdefault(kind.name, kind)
    if existing is not kind:
        raise ValueError(f"a plugin kind '{kind.name}' is registered already ({type(existing).__name__})")
    return kind


def kind_for(manifest_or_name: PluginManifest | str) -> PluginKind:
    """The kind a manifest names; `UnknownKind` (one line) where none is registered under that name."""
    name = manifest_or_name if isinstance(manifest_or_name, str) else manifest_or_name.kind
    if name not in _KINDS:
        for module in _BUILTIN_KIND_MODULES:
            importlib.import_module(module)
    try:
        return _KINDS[name]
    except KeyError:
        raise UnknownKind(f"no plugin kind '{name}' is known here (known: {', '.join(sorted(_KINDS))}); a newer "
                          "diffplugin may support it") from None
