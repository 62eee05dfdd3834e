"""The `diffplugin` command line: a thin layer over the Python API. Heavy libraries load inside commands.

One module per top-level command or group (`edit` also holds `plan`, `run` and `apply`), each with a
`register(app)` that `root` calls; `common` and `help` are what they all share.
"""

from assistant.cli.root import SECTIONS, app, run

__all__ = ["SECTIONS", "app", "run"]
