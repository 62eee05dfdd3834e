"""The Plugin-Selector: which plugins a request asks for, in the order the user named them, or none.

`load_selector` gives the offline selector (MiniLM, shipped weights, no downloads), or, when a photo is given and
the paper's selector weights have been pulled, one that also uses the photo (see `image.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from assistant.selector.model import WEIGHTS, Candidate, OfflineSelector, SelectedPlugin, Selection, Selector

if TYPE_CHECKING:
    from registry.store import Registry

__all__ = ["WEIGHTS", "Candidate", "OfflineSelector", "SelectedPlugin", "Selection", "Selector", "load_selector"]


def load_selector(registry: Registry | None = None, weights: str | Path | None = None,
                  image: str | Path | None = None) -> Selector:
    """A selector over the enabled plugins of `registry` (None: the data folder's); `weights` is a trained selector
    folder."""
    from assistant.paths import models_dir, open_registry
    from assistant.selector.candidates import registry_candidates

    store = registry if registry is not None else open_registry()
    offline = OfflineSelector.load(registry_candidates(store), weights or WEIGHTS, cache_folder=store.root)
    if image is None:
        return offline
    from assistant.selector.image import with_image

    return with_image(offline, Path(image), store, models_dir())
