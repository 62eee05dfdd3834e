"""The plugin registry: manifests, installation, trust and search (see docs/architecture.md)."""
