"""Embeddings of the enabled plugins' example requests, kept in the registry folder between calls: every
`select`, `plan`, `edit` and chat would otherwise encode all of them again at start."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from assistant.selector.runtime import Encoder, mapped_safetensors, save_derived


class EmbeddingCache:
    """The embeddings of the texts last encoded, in one safetensors file, for one encoder (`encoder_key`). Only
    texts not in it are encoded: installing a plugin encodes its examples alone, removing or disabling one
    encodes nothing. Derived data: a file that is missing, damaged or for another encoder is ignored, and one
    that cannot be written is skipped."""

    def __init__(self, file: Path, key: str) -> None:
        self.file, self.key = file, key

    def _load(self) -> dict[str, np.ndarray]:
        try:
            tensors, metadata = mapped_safetensors(self.file)
            texts = json.loads(metadata["texts"]) if metadata.get("encoder") == self.key else None
            embeddings = tensors["embeddings"]
        except (ValueError, KeyError):  # missing or damaged: recompute
            return {}
        if not (isinstance(texts, list) and embeddings.ndim == 2 and embeddings.shape[0] == len(texts)
                and embeddings.dtype == np.float32):
            return {}
        return dict(zip(texts, embeddings, strict=True))

    def embed(self, encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of `texts` (unit length, [n, d]), encoding only those not in the cache; the cache then holds
        exactly these texts."""
        known = self._load()
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if missing:
            known.update(zip(missing, encoder.embed(missing), strict=True))
        result = np.stack([known[t] for t in texts])
        if missing or len(known) != len(set(texts)):
            kept = list(dict.fromkeys(texts))
            save_derived(self.file, {"embeddings": np.stack([known[t] for t in kept])},
                         {"encoder": self.key, "texts": json.dumps(kept)})
        return result
