"""Community indexes: static JSON documents that list published plugins, to search and install them by id.

    format.py    the index document (pydantic) and its JSON Schema; what a signature covers
    signing.py   ed25519 publisher keys and entry signatures
    sources.py   the configured indexes, their cached copies (conditional requests) and archive downloads
    resolve.py   which entries may be used (signatures, pinned keys, reserved names) and id[@version] resolution
    publish.py   building an archive and adding its signed entry to an index folder
    search.py    indexed plugins in the same embedding search as the installed ones
    hub.py       `CommunityIndexes`: the above together, as the CLI and the chat use them

Nothing here installs by itself: a verified archive goes through `Registry.install`, with its checks and trust.
"""
