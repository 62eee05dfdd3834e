"""Turning a registered plugin into something that runs. The only place plugin code is imported, and the
place weights are checked again (SHA-256) before they are used."""

from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from registry.discover import BUILTIN_CODE, BUILTIN_CODE_PACKAGE, PluginRecord
from registry.errors import InstallRefused
from registry.manifest import DIFFPLUGIN_WEIGHTS, MANIFEST_FILE, PluginManifest
from registry.store import PluginStatus, Registry

if TYPE_CHECKING:
    import PIL.Image
    import torch

    from plugins.diffplugin.plugin import TaskPlugin
    from plugins.diffplugin.scb import SCBNet
    from plugins.diffplugin.tpb import TPBNet

_Branch = TypeVar("_Branch", "TPBNet", "SCBNet")


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
                dtype: torch.dtype | None = None) -> TaskPlugin | PythonPlugin:
    """Load a runnable plugin: a [`TaskPlugin`] for diffplugin plugins, a [`PythonPlugin`] for code plugins."""
    record = runnable_status(registry, plugin_id, version).active
    if record.manifest.kind == "diffplugin":
        return _load_task_plugin(registry, record, dtype)
    registry.verify(record)
    assert record.manifest.python is not None  # the manifest refuses a python plugin without its section
    return PythonPlugin(record.manifest, _import_entry_point(record), dict(record.manifest.python.options))


def _load_task_plugin(registry: Registry, record: PluginRecord, dtype: torch.dtype | None) -> TaskPlugin:
    """Read each weight file once, check those very bytes against the manifest, and build the branches from
    them (no loader gets to pick other files, and nothing can change between the check and the load)."""
    from safetensors.torch import load as load_safetensors

    from plugins.diffplugin.plugin import TaskPlugin
    from plugins.diffplugin.scb import SCBNet
    from plugins.diffplugin.settings import PluginSettings
    from plugins.diffplugin.tpb import TPBNet

    manifest, folder = record.manifest, registry.weights_folder(record)
    expected = {w.path: (i, w.sha256) for i, w in enumerate(manifest.weights)}

    def branch(weights_path: str, model_class: type[_Branch]) -> _Branch:
        path = folder / weights_path
        data = path.read_bytes()
        if weights_path in expected:
            index, sha256 = expected[weights_path]
            if hashlib.sha256(data).hexdigest() != sha256:
                raise InstallRefused(path, "SHA-256 mismatch with the manifest; the file is damaged or was changed",
                                     field=f"weights.{index}.sha256")
        try:
            state = load_safetensors(data)
        except Exception as err:
            raise InstallRefused(path, f"not a safetensors file ({err})") from None
        config = json.loads((path.parent / "config.json").read_text())
        model: _Branch = model_class.from_config(config)  # type: ignore[assignment]  # a tuple with unused kwargs
        model.load_state_dict(state, strict=True)
        return model.to(dtype=dtype) if dtype is not None else model  # type: ignore[call-arg]  # see TaskPlugin.to

    tpb_path, scb_path = DIFFPLUGIN_WEIGHTS
    tpb, scb = branch(tpb_path, TPBNet), branch(scb_path, SCBNet)
    assert manifest.diffplugin is not None  # the manifest refuses a diffplugin plugin without its section
    spec = manifest.diffplugin.model_dump(exclude={"base"})
    return TaskPlugin(tpb, scb, PluginSettings(task=manifest.tasks[0], **spec))


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
