"""Turning a registered plugin into something that runs. The only place plugin code is imported, and the
place weights are checked again (SHA-256) before they are used."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from registry.errors import InstallRefused
from registry.manifest import MANIFEST_FILE, PluginManifest
from registry.store import PluginStatus, Registry

if TYPE_CHECKING:
    import PIL.Image

    from plugins.diffplugin.plugin import TaskPlugin


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
        raise InstallRefused(manifest_file, f"'{plugin_id}' runs its own code and is not trusted yet; if you trust "
                                            f"its author: `diffplugin plugins enable {plugin_id} --trust`", "kind")
    if status.problems:
        raise InstallRefused(manifest_file, "; ".join(status.problems))
    return status


def load_plugin(registry: Registry, plugin_id: str, version: str | None = None,
                dtype: Any = None) -> TaskPlugin | PythonPlugin:
    """Load a runnable plugin: a [`TaskPlugin`] for diffplugin plugins, a [`PythonPlugin`] for code plugins."""
    status = runnable_status(registry, plugin_id, version)
    record = status.active
    registry.verify(record)
    manifest = record.manifest
    if manifest.kind == "diffplugin":
        from plugins.diffplugin.plugin import TaskPlugin
        from plugins.diffplugin.settings import PluginSettings

        spec = manifest.diffplugin.model_dump(exclude={"base"})
        settings = PluginSettings(task=manifest.tasks[0], **spec)
        return TaskPlugin.from_pretrained(registry.weights_folder(record), dtype=dtype, settings=settings)
    module_name, _, attribute = manifest.python.entry_point.partition(":")
    folder = str(record.folder)
    if record.source == "installed" and folder not in sys.path:
        sys.path.insert(0, folder)  # the plugin's own module sits beside its manifest
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise InstallRefused(record.folder / MANIFEST_FILE, f"cannot load {manifest.python.entry_point}: {err}",
                             "python.entry_point") from None
    return PythonPlugin(manifest, function, dict(manifest.python.options))
