"""Turning a registered plugin into something that runs. The only place plugin code is imported, and the
place weights are checked again (SHA-256) before they are used."""

from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, ModuleType
from typing import TYPE_CHECKING, Any

from registry.discover import BUILTIN_CODE, BUILTIN_CODE_PACKAGE, PluginRecord
from registry.errors import InstallRefused, RegistryError
from registry.kinds import OptionValue, kind_for, register_kind
from registry.manifest import MANIFEST_FILE, PluginManifest
from registry.store import PluginStatus, Registry, verify_weights

if TYPE_CHECKING:
    import PIL.Image
    import torch

    from registry.kinds import LoadedPlugin


@dataclass
class PythonPlugin:
    """A code plugin: `plugin(image, **options)` returns the edited image."""

    manifest: PluginManifest
    function: Callable[..., PIL.Image.Image]
    options: dict[str, Any] = field(default_factory=dict)

    def __call__(self, image: PIL.Image.Image, **options: Any) -> PIL.Image.Image:
        result = self.function(image, **{**self.options, **options})
        if not hasattr(result, "size") or not hasattr(result, "mode"):
            raise TypeError(f"plugin {self.manifest.id} returned {type(result).__name__}, not a PIL image")
        return result


def runnable_status(registry: Registry, plugin_id: str, version: str | None = None) -> PluginStatus:
    """The plugin's status, or a refusal that says why it may not run and what to do."""
    status = registry.get(plugin_id, version)
    manifest_file = status.active.folder / MANIFEST_FILE
    if not status.enabled:
        raise InstallRefused(manifest_file, f"'{plugin_id}' is disabled; `diffplugin plugins enable {plugin_id}`")
    if not status.trusted:
        ref = f"{plugin_id}@{status.active.version}"
        raise InstallRefused(manifest_file, f"'{ref}' runs its own code and is not trusted yet; if you trust its "
                                            f"author: `diffplugin plugins enable {ref} --trust`", "kind")
    if status.problems:
        raise InstallRefused(manifest_file, "; ".join(status.problems))
    return status


def load_plugin(registry: Registry, plugin_id: str, version: str | None = None,
                dtype: torch.dtype | None = None) -> LoadedPlugin:
    """Load a runnable plugin as its kind builds it: a [`TaskPlugin`] for diffplugin plugins, a [`PythonPlugin`]
    for code plugins."""
    record = runnable_status(registry, plugin_id, version).active
    return kind_for(record.manifest).load(record, registry.weights_folder(record), dtype)


class PythonKind:
    """The `python` kind: a callable in the plugin's own code (or this project's `plugins.builtin`)."""

    name = "python"
    runs_code = True
    diffusion = False

    def manifest_problem(self, manifest: PluginManifest) -> str | None:
        return None  # its table is checked with every manifest's; a callable has no further rule here

    def check_files(self, manifest: PluginManifest, folder: Path) -> None:
        assert manifest.python is not None  # the manifest refuses a python plugin without its section
        module = manifest.python.entry_point.split(":")[0].split(".")[0]
        if not ((folder / f"{module}.py").is_file() or (folder / module / "__init__.py").is_file()):
            raise InstallRefused(folder / MANIFEST_FILE, f"module '{module}' is not in the plugin folder",
                                 field="python.entry_point")

    def pulled_folder(self, manifest: PluginManifest, models_dir: Path) -> Path:
        raise RegistryError(f"{manifest.id}: `diffplugin models pull` fetches Task-Plugin weights only")

    def pulled_problems(self, manifest: PluginManifest, models_dir: Path) -> list[str]:
        return ["`diffplugin models pull` fetches Task-Plugin weights only; list this plugin's weights beside its "
                "manifest"]

    def options(self, manifest: PluginManifest) -> dict[str, OptionValue]:
        return dict(manifest.python.options) if manifest.python else {}

    def load(self, record: PluginRecord, weights_folder: Path, dtype: torch.dtype | None) -> PythonPlugin:
        verify_weights(record, weights_folder)
        return PythonPlugin(record.manifest, _import_entry_point(record), self.options(record.manifest))


register_kind(PythonKind())


def _import_entry_point(record: PluginRecord) -> Callable[..., Any]:
    manifest = record.manifest
    assert manifest.python is not None  # only python plugins have an entry point
    module_name, _, attribute = manifest.python.entry_point.partition(":")
    try:
        if record.source == "installed":
            module = _import_from_folder(record, module_name)
        elif record.source == "builtin":
            module = _import_builtin(module_name)
        else:  # a pip-installed package: import it as installed
            module = importlib.import_module(module_name)
        function: Callable[..., Any] = getattr(module, attribute)
        return function
    except (ImportError, AttributeError, OSError) as err:
        raise InstallRefused(record.folder / MANIFEST_FILE, f"cannot load {manifest.python.entry_point}: {err}",
                             "python.entry_point") from None


def _import_builtin(module_name: str) -> ModuleType:
    """Import a built-in plugin's module: only from this project's own `plugins.builtin` package, and only the
    copy inside this project (built-ins run without asking, so neither a manifest naming other code nor a
    same-named module earlier on sys.path may ride on that trust)."""
    if not module_name.startswith(f"{BUILTIN_CODE_PACKAGE}."):
        raise ImportError(f"built-in plugin code must live in {BUILTIN_CODE_PACKAGE}, not '{module_name}'")
    module = importlib.import_module(module_name)
    location = Path(getattr(module, "__file__", None) or "").resolve()
    if not location.is_relative_to(BUILTIN_CODE):
        raise ImportError(f"'{module_name}' was imported from {location}, not from {BUILTIN_CODE}")
    return module


#: Prefix of the module names under which plugin folders are imported.
_FOLDER_MODULES = "_diffplugin_"


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compiles the `.py` file itself: bytecode (`__pycache__`, `.pyc`) is neither read nor written, so code the
    user never reviewed cannot run in place of the source that was (an unchecked-hash .pyc would)."""

    def get_code(self, fullname: str) -> CodeType:
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)


def _source_spec(fullname: str, location: Path, package: bool) -> importlib.machinery.ModuleSpec | None:
    return importlib.util.spec_from_file_location(
        fullname, location, loader=_SourceOnlyLoader(fullname, str(location)),
        submodule_search_locations=[str(location.parent)] if package else None)


class _PluginModuleFinder(importlib.abc.MetaPathFinder):
    """Finds the submodules of plugins imported from their folders, as `.py` source only: without it the import
    system would also take a sourceless `.pyc` or a cached one from `__pycache__`."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(_FOLDER_MODULES) or "." not in fullname or path is None:
            return None
        name = fullname.rpartition(".")[2]
        for entry in path:
            if (Path(entry) / name / "__init__.py").is_file():
                return _source_spec(fullname, Path(entry) / name / "__init__.py", package=True)
            if (Path(entry) / f"{name}.py").is_file():
                return _source_spec(fullname, Path(entry) / f"{name}.py", package=False)
        for entry in path:
            if (Path(entry) / name).is_dir():  # a folder without __init__.py: a namespace package, as Python has it
                spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
                spec.submodule_search_locations = [str(Path(entry) / name)]
                return spec
        raise ModuleNotFoundError(f"No module named '{fullname}' (plugin code is imported from .py files only)",
                                  name=fullname)


def _import_from_folder(record: PluginRecord, module_name: str) -> ModuleType:
    """Import the plugin's module from its own folder under a name of its own, so two plugins (or two versions
    of one) with the same module name never share code, and nothing is added to sys.path."""
    top, *rest = module_name.split(".")
    package_init = record.folder / top / "__init__.py"
    location = package_init if package_init.is_file() else record.folder / f"{top}.py"
    # Keyed by folder and content: a reinstalled plugin with new code never gets the old module back.
    key = hashlib.sha1(f"{record.folder.resolve()}\0".encode() + location.read_bytes()).hexdigest()[:16]
    unique = f"{_FOLDER_MODULES}{key}_{top}"
    if not any(isinstance(finder, _PluginModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PluginModuleFinder())
    if unique not in sys.modules:
        spec = _source_spec(unique, location, package=package_init.is_file())
        if spec is None or spec.loader is None:
            raise ImportError(f"no module '{top}' in {record.folder}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[unique] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[unique]
            raise
    return importlib.import_module(".".join([unique, *rest]))
