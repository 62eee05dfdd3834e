"""Built-in plugins that need no weights: classic restoration methods and everyday adjustments.

They are the embedded default, so a new user gets real edits with zero downloads. Each is an ordinary `python`
plugin: a manifest in `manifests/` (found through the `diffplugin.plugins` entry point `builtin`, like every other
plugin) that points at a function `f(image, **options) -> image` in this package. Importing this package imports
no plugin module; the registry imports one only when it runs.
"""
