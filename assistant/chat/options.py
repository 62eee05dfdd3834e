"""The options a plan step's plugin takes, and of what type, so `/set` refuses a wrong value at once, naming the
step, the plugin, the option and what it must be (a run would stop later, on the plugin's own check)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING

from assistant.chat.session import ChatError
from plugins.quoting import shown

if TYPE_CHECKING:
    from registry.store import Registry


#: How a message names each option type.
TYPE_WORDS: dict[type, str] = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


@dataclass(frozen=True)
class OptionTypes:
    """The options of one plugin: their types (from the defaults; an option without one takes any value) and
    every name it takes (None: any, for a callable that takes **options)."""

    types: dict[str, type]
    names: list[str] | None


def option_types(registry: Registry, plugin_id: str) -> OptionTypes:
    """What `plugin_id` takes: a diffusion plugin what the executor reads, a code plugin its callable's keyword
    parameters and its manifest's defaults. A code plugin is imported (as a run would); its weights are not."""
    from assistant.executor import DIFFUSION_OPTIONS, is_code_plugin, known_options
    from registry.runtime import load_plugin

    status = registry.get(plugin_id.partition("@")[0])
    if status.manifest.python is None:
        return OptionTypes(dict(DIFFUSION_OPTIONS), list(DIFFUSION_OPTIONS))
    plugin = load_plugin(registry, status.id)
    assert is_code_plugin(plugin)  # its manifest has a python table
    types: dict[str, type] = {}
    try:
        parameters = list(inspect.signature(plugin.function).parameters.values())[1:]  # the first is the image
    except (TypeError, ValueError):  # a callable without a signature: only the manifest's defaults say
        parameters = []
    defaults = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    for name, default in {**defaults, **plugin.options}.items():
        if type(default) in TYPE_WORDS:
            types[name] = type(default)
    return OptionTypes(types, known_options(plugin))


def checked(options: OptionTypes, where: str, key: str, typed: str, value: object) -> object:
    """`value` (parsed from the `typed` text) as option `key` of the step `where` names, or `ChatError`. Text
    options keep the text as typed, so `aspect=16:9` stays "16:9" (YAML would read a number)."""
    if options.names is not None and key not in options.names:
        takes = f"its options are {', '.join(options.names)}" if options.names else "it takes no options"
        raise ChatError(f"{where}: unknown option '{key}'; {takes}")
    expected = options.types.get(key)
    if expected is None:
        return value
    if expected is str:
        return typed
    if expected is float and isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if type(value) is not expected:
        raise ChatError(f"{where}: option '{key}' must be {TYPE_WORDS[expected]}, not {shown(typed)}")
    return value
