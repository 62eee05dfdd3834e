"""The selector's sentence encoder in PyTorch: the bundled all-MiniLM-L6-v2 with the selector's LoRA adapter, for
training (and for use where `runtime.py`'s NumPy path cannot run the model).

The adapter is small (safetensors, ~1.4 MB) and ships with the project. The search index uses the plain
encoder from the same bundled files (`registry.embedding`); this is a second, separately loaded copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from assistant.selector.runtime import BATCH
from plugins.errors import MissingFile

if TYPE_CHECKING:  # sentence-transformers and PEFT load with the encoder
    from peft import PeftModel
    from sentence_transformers import SentenceTransformer

#: The attention and feed-forward projections of every BERT layer in MiniLM.
LORA_TARGETS = ["query", "key", "value", "dense"]


def load_encoder(adapter: str | Path | None = None) -> SentenceTransformer:
    """A fresh SentenceTransformer on CPU; with `adapter`, the trained LoRA weights merged into it."""
    from sentence_transformers import SentenceTransformer

    from registry.embedding import minilm_path, quiet_transformers

    with quiet_transformers():
        model = SentenceTransformer(str(minilm_path()), device="cpu")
    if adapter is not None:
        import warnings

        from peft import PeftModel

        adapter = Path(adapter)
        if not (adapter / "adapter_config.json").is_file():
            raise MissingFile(f"{adapter}: no adapter_config.json; not a selector adapter folder")
        with warnings.catch_warnings():  # PEFT calls a transformers API that warns about its own deprecation
            warnings.simplefilter("ignore", FutureWarning)
            model[0].model = PeftModel.from_pretrained(_transformer(model), str(adapter)).merge_and_unload()
    return model.eval()


def add_lora(model: SentenceTransformer, rank: int, dropout: float = 0.1) -> PeftModel:
    """Wrap the encoder's transformer in trainable LoRA layers (everything else frozen); returns the PEFT model."""
    import warnings

    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LORA_TARGETS, lora_dropout=dropout)
    with warnings.catch_warnings():  # see load_encoder
        warnings.simplefilter("ignore", FutureWarning)
        model[0].model = get_peft_model(_transformer(model), config)
    return model[0].model


def encode(model: SentenceTransformer, texts: Sequence[str], grad: bool = False) -> torch.Tensor:
    """Unit-length sentence embeddings [n, 384]: MiniLM's mean pooling over tokens, as the SentenceTransformer
    computes it, called directly (the wrapper's per-call overhead is a quarter of a request's latency); with
    `grad`, differentiable (training)."""
    features = model.tokenizer(list(texts), padding=True, truncation=True, max_length=model.max_seq_length,
                               return_tensors="pt")
    with torch.inference_mode(not grad):
        tokens = _transformer(model)(**features).last_hidden_state
        mask = features["attention_mask"].unsqueeze(-1).to(tokens.dtype)
        return F.normalize((tokens * mask).sum(dim=1) / mask.sum(dim=1), dim=-1)


def encode_batched(model: SentenceTransformer, texts: Sequence[str], batch: int = BATCH) -> torch.Tensor:
    """`encode` for many texts, `batch` at a time (one call for all would pad them into a single tensor)."""
    parts = [encode(model, texts[start:start + batch]) for start in range(0, len(texts), batch)]
    return torch.cat(parts) if parts else torch.zeros(0, model.get_sentence_embedding_dimension() or 0)


def _transformer(model: SentenceTransformer) -> torch.nn.Module:
    """The BERT inside the encoder, which sentence-transformers types as any attribute of a torch Module."""
    transformer = model[0].model
    assert isinstance(transformer, torch.nn.Module)
    return transformer
