"""The selector's sentence encoder: the bundled all-MiniLM-L6-v2 with the selector's LoRA adapter merged in.

The adapter is small (safetensors, ~1.4 MB) and ships with the project. The search index uses the plain
encoder from the same bundled files (`registry.embedding`); this is a second, separately loaded copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ADAPTER_FOLDER = "adapter"
#: Texts encoded at once: memory for one batch is bounded by this and MiniLM's 256-token limit, however many
#: example requests the enabled plugins have.
BATCH = 64
#: The attention and feed-forward projections of every BERT layer in MiniLM.
LORA_TARGETS = ["query", "key", "value", "dense"]


def load_encoder(adapter: str | Path | None = None) -> Any:
    """A fresh SentenceTransformer on CPU; with `adapter`, the trained LoRA weights merged into it."""
    from sentence_transformers import SentenceTransformer

    from registry.embedding import minilm_path

    model = SentenceTransformer(str(minilm_path()), device="cpu")
    if adapter is not None:
        import warnings

        from peft import PeftModel

        adapter = Path(adapter)
        if not (adapter / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{adapter}: no adapter_config.json; not a selector adapter folder")
        with warnings.catch_warnings():  # PEFT calls a transformers API that warns about its own deprecation
            warnings.simplefilter("ignore", FutureWarning)
            model[0].model = PeftModel.from_pretrained(model[0].model, str(adapter)).merge_and_unload()
    return model.eval()


def add_lora(model: Any, rank: int, dropout: float = 0.1) -> Any:
    """Wrap the encoder's transformer in trainable LoRA layers (everything else frozen); returns the PEFT model."""
    import warnings

    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LORA_TARGETS, lora_dropout=dropout)
    with warnings.catch_warnings():  # see load_encoder
        warnings.simplefilter("ignore", FutureWarning)
        model[0].model = get_peft_model(model[0].model, config)
    return model[0].model


def encode(model: Any, texts: Sequence[str], grad: bool = False) -> torch.Tensor:
    """Unit-length sentence embeddings [n, 384]: MiniLM's mean pooling over tokens, as the SentenceTransformer
    computes it, called directly (the wrapper's per-call overhead is a quarter of a request's latency); with
    `grad`, differentiable (training)."""
    features = model.tokenizer(list(texts), padding=True, truncation=True, max_length=model.max_seq_length,
                               return_tensors="pt")
    with torch.inference_mode(not grad):
        tokens = model[0].model(**features).last_hidden_state
        mask = features["attention_mask"].unsqueeze(-1).to(tokens.dtype)
        return F.normalize((tokens * mask).sum(dim=1) / mask.sum(dim=1), dim=-1)


def encode_batched(model: Any, texts: Sequence[str], batch: int = BATCH) -> torch.Tensor:
    """`encode` for many texts, `batch` at a time (one call for all would pad them into a single tensor)."""
    parts = [encode(model, texts[start:start + batch]) for start in range(0, len(texts), batch)]
    return torch.cat(parts) if parts else torch.zeros(0, model.get_sentence_embedding_dimension())


def encoder_key(adapter: str | Path) -> str:
    """Names one encoder: the base model and the adapter's files (embeddings of another encoder do not mix)."""
    from registry.embedding import minilm_path

    digest = hashlib.sha256(str(minilm_path()).encode())
    for file in sorted(Path(adapter).iterdir()):
        if file.is_file():
            digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


class EmbeddingCache:
    """Embeddings of the texts last encoded, in one safetensors file, for one encoder: every `select`, `edit` and
    chat would otherwise encode every enabled plugin's examples again (seconds on a CPU). Derived data: a file
    that is missing, damaged or for another encoder is ignored, and one that cannot be written is skipped."""

    def __init__(self, file: Path, key: str) -> None:
        self.file, self.key = file, key

    def _load(self) -> dict[str, torch.Tensor]:
        from safetensors import safe_open

        try:
            with safe_open(str(self.file), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("encoder") != self.key:
                    return {}
                texts = json.loads(meta["texts"])
                embeddings = f.get_tensor("embeddings").float()
        except Exception:  # any damage: recompute (safetensors raises its own error types)
            return {}
        if not (isinstance(texts, list) and embeddings.ndim == 2 and embeddings.shape[0] == len(texts)):
            return {}
        return dict(zip(texts, embeddings, strict=True))

    def encode(self, model: Any, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings of `texts` (unit length, [n, d]), encoding only those not in the cache; the cache then holds
        exactly these texts."""
        known = self._load()
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if missing:
            known.update(zip(missing, encode_batched(model, missing), strict=True))
        result = torch.stack([known[t] for t in texts])
        if missing or len(known) != len(set(texts)):
            self._save(list(dict.fromkeys(texts)), known)
        return result

    def _save(self, texts: list[str], known: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        with contextlib.suppress(OSError):
            self.file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.file.name}-", dir=self.file.parent)
            os.close(fd)
            try:
                embeddings = torch.stack([known[t] for t in texts]).contiguous()
                save_file({"embeddings": embeddings}, tmp, metadata={"encoder": self.key, "texts": json.dumps(texts)})
                os.replace(tmp, self.file)
            finally:
                Path(tmp).unlink(missing_ok=True)
