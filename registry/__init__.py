"""The plugin registry: manifests, installation, trust and search (see docs/architecture.md).

Plugin code may raise `registry.CannotHelp("why")` to leave a photo it cannot improve as it was."""

from registry.errors import CannotHelp

__all__ = ["CannotHelp"]
