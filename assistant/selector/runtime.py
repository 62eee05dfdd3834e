"""The selector's encoder at use, without PyTorch: MiniLM's forward pass in NumPy on the bundled weights, the
`tokenizers` library for its tokenizer, and the LoRA adapter merged into the weights as PEFT merges it.

Why: importing torch takes about 2 s and sentence-transformers 6-10 s on a 2-core machine, far more than a
request's work (about 15 ms). Training keeps the PyTorch path (`encoder.py`); the
embeddings here equal it to float32 rounding (cosine >= 0.99999, tested in tests/test_cold_start.py).
`load_runtime` falls back to the PyTorch path where this one cannot run the model (another architecture, an
adapter kind other than plain LoRA, no `tokenizers`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from plugins.atomic_files import atomic_path
from plugins.errors import MissingFile

if TYPE_CHECKING:
    from tokenizers import Tokenizer

#: Texts encoded at once: memory for one batch is bounded by this and MiniLM's 256-token limit, however many
#: example requests the enabled plugins have.
BATCH = 64


class Unsupported(Exception):
    """The model or adapter is not one this runtime reproduces exactly."""


class Encoder(Protocol):
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length sentence embeddings [n, d], float32."""


class NumpyMiniLM:
    """A BERT encoder (all-MiniLM-L6-v2's architecture) with mean pooling, as sentence-transformers runs it."""

    runtime = "numpy"

    def __init__(self, weights: dict[str, np.ndarray], kernels: dict[str, np.ndarray], config: dict[str, Any],
                 tokenizer: Tokenizer) -> None:
        self.weights = weights
        self.kernels = kernels  # the projections, [in, out], with the adapter merged in
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.tokenizer = tokenizer  # truncating, not padding

    @classmethod
    def load(cls, folder: Path, adapter: Path | None = None, cache: Path | None = None) -> NumpyMiniLM:
        """The model in `folder` (a sentence-transformers folder of a BERT model with mean pooling), with the LoRA
        adapter folder `adapter` merged in. `cache`: a file that keeps the merged projections between processes,
        for the encoder `encoder_key` names (derived data: rebuilt when missing, damaged or for another encoder;
        not kept when it cannot be written)."""
        try:
            from tokenizers import Tokenizer
        except ImportError as err:
            raise Unsupported(f"{err.name} is not installed") from None
        config = json.loads((folder / "config.json").read_text())
        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
        modes = {key for key, on in pooling.items() if key.startswith("pooling_mode_") and on}
        if (config.get("model_type") != "bert" or config.get("hidden_act") != "gelu"
                or config.get("position_embedding_type", "absolute") != "absolute"
                or modes != {"pooling_mode_mean_tokens"}):
            raise Unsupported(f"{folder}: not a BERT encoder with GELU and mean pooling")
        max_length = int(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])
        try:
            weights, _ = mapped_safetensors(folder / "model.safetensors")
        except ValueError as err:
            raise Unsupported(str(err)) from None
        # The projections' weights as [in, out], contiguous: BLAS multiplies a few tokens by them twice as fast as
        # by the stored [out, in] transposed on the fly.
        shapes = {name.removesuffix(".weight"): w.shape[::-1] for name, w in weights.items()
                  if name.startswith("encoder.layer.") and w.ndim == 2}
        key = encoder_key(adapter) if cache else ""
        kernels = _cached_kernels(cache, key, shapes) if cache else None
        if kernels is None:
            deltas = lora_deltas(adapter, weights) if adapter is not None else {}
            if set(deltas) - set(shapes) - {"pooler.dense"}:  # the pooler is never used by mean pooling
                raise Unsupported(f"{adapter}: adapts layers this runtime does not run")
            kernels = {}
            for name in shapes:
                kernels[name] = np.ascontiguousarray(weights[name + ".weight"].T)
                if name in deltas:
                    kernels[name] += deltas[name].T
            if cache:
                save_derived(cache, kernels, {"encoder": key})
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # tokenizer.json pads and truncates every text to 128 tokens; sentence-transformers truncates at the
        # model's max_seq_length and pads to the longest text of a batch (`embed`) instead.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length)
        return cls(weights, kernels, config, tokenizer)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with one_blas_thread():
            return self._embed(texts)

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        hidden = self.weights["embeddings.word_embeddings.weight"].shape[1]
        result = np.zeros((len(texts), hidden), np.float32)
        tokens = [e.ids for e in self.tokenizer.encode_batch(list(texts))]
        # Batches of texts of similar length, as sentence-transformers makes them: little padding in attention.
        order = sorted(range(len(texts)), key=lambda i: len(tokens[i]))
        for start in range(0, len(order), BATCH):
            rows = order[start:start + BATCH]
            lengths = np.array([len(tokens[i]) for i in rows])
            x = self._forward(np.concatenate([tokens[i] for i in rows]), lengths)
            pooled = np.add.reduceat(x, np.cumsum(lengths) - lengths, axis=0) / lengths[:, None].astype(np.float32)
            result[rows] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return result

    def _forward(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """The last hidden states of texts given as their tokens one after another ([sum(lengths), hidden]).
        Tokens are rows of one matrix, without padding, for everything but attention: the projections cost
        what the tokens need, and NumPy multiplies one matrix by a weight much faster than a stack of them."""
        w = self.weights
        batch, longest = len(lengths), int(lengths.max())
        text = np.repeat(np.arange(batch), lengths)  # each token's text and position in it
        position = np.arange(len(ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][position]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self._norm(x, "embeddings.LayerNorm")
        width = x.shape[-1] // self.heads
        # Attention runs per text on a padded [batch, heads, longest, width] copy; padding is never attended to
        # (its scores get the lowest float, as in transformers).
        blocked = np.where(np.arange(longest)[None, :] < lengths[:, None], np.float32(0),
                           np.finfo(np.float32).min)[:, None, None, :]

        def padded(t: np.ndarray) -> np.ndarray:  # [tokens, heads * width] -> [batch, heads, longest, width]
            out = np.zeros((batch, longest, t.shape[-1]), np.float32)
            out[text, position] = t
            return out.reshape(batch, longest, self.heads, width).transpose(0, 2, 1, 3)

        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q, k, v = (padded(self._linear(x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.float32(math.sqrt(width)) + blocked
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            attended = (scores / scores.sum(axis=-1, keepdims=True)) @ v
            attended = attended.transpose(0, 2, 1, 3).reshape(batch, longest, -1)[text, position]
            x = self._norm(self._linear(attended, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            h = self._linear(x, p + "intermediate.dense")
            h = h * np.float32(0.5) * (np.float32(1.0) + erf(h / np.float32(math.sqrt(2.0))))  # exact GELU
            x = self._norm(self._linear(h, p + "output.dense") + x, p + "output.LayerNorm")
        return x

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.kernels[name] + self.weights[name + ".bias"]

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        share = np.float32(1.0 / x.shape[-1])
        centred = x - x.sum(axis=-1, keepdims=True) * share
        variance = (centred * centred).sum(axis=-1, keepdims=True) * share
        scale = np.float32(1.0) / np.sqrt(variance + np.float32(self.eps))
        return centred * scale * self.weights[name + ".weight"] + self.weights[name + ".bias"]


def one_blas_thread() -> contextlib.AbstractContextManager[object]:
    """NumPy's BLAS limited to one thread for the duration. MiniLM's matrices are small (384 wide): on a busy
    2-core machine, OpenBLAS's second thread made a short request 10-25x slower (26 ms against 290-710 ms) and
    the adapter merge 5x slower; with one thread they cost the same busy or idle."""
    controller = _blas_controller()
    return controller.limit(limits=1, user_api="blas") if controller else contextlib.nullcontext()


@functools.cache
def _blas_controller() -> Any:
    """threadpoolctl's controller, made once (it reads the loaded libraries); None without threadpoolctl
    (installed with scikit-learn), and BLAS then keeps its own thread count."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def erf(x: np.ndarray) -> np.ndarray:
    """The error function (Abramowitz and Stegun 7.1.26): within 6e-7 of SciPy's in float32, and MiniLM's GELU
    within 3e-7, near float32's own rounding (tested). SciPy's would cost 0.2 s of import at every start, a
    sixth of a `select`."""
    z = np.abs(x)
    t = np.float32(1.0) / (np.float32(1.0) + np.float32(0.3275911) * z)
    poly = t * (np.float32(0.254829592) + t * (np.float32(-0.284496736) + t * (np.float32(1.421413741)
                + t * (np.float32(-1.453152027) + t * np.float32(1.061405429)))))
    return np.copysign(np.float32(1.0) - poly * np.exp(-z * z), x)


def lora_deltas(adapter: Path, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per adapted projection of `weights` (by name, without ".weight"), the LoRA update `scale * B @ A` that PEFT's
    `merge_and_unload` adds to its weight."""
    from safetensors.numpy import load_file

    if not (adapter / "adapter_config.json").is_file():
        raise MissingFile(f"{adapter}: no adapter_config.json; not a selector adapter folder")
    config = json.loads((adapter / "adapter_config.json").read_text())
    if (config.get("peft_type") != "LORA" or config.get("use_dora") or config.get("fan_in_fan_out")
            or config.get("bias", "none") != "none" or config.get("rank_pattern") or config.get("alpha_pattern")
            or config.get("modules_to_save") or config.get("lora_bias")):
        raise Unsupported(f"{adapter}: only plain LoRA adapters are merged here")
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    scale = np.float32(alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank)
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    deltas = {}
    with one_blas_thread():
        for key, a in tensors.items():
            if not key.endswith(".lora_A.weight"):
                continue
            name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            b = tensors.get(key.replace(".lora_A.", ".lora_B."))
            if name + ".weight" not in weights or b is None:
                raise Unsupported(f"{adapter}: {key} matches no weight of the model")
            deltas[name] = scale * (b.astype(np.float32) @ a.astype(np.float32))
    if not deltas or len(tensors) != 2 * len(deltas):
        raise Unsupported(f"{adapter}: tensors other than LoRA pairs")
    return deltas


#: The tensor types read from safetensors files here (MiniLM's weights, its position ids, the cached kernels).
_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def mapped_safetensors(file: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors of a safetensors file as read-only arrays mapped from it, and its metadata: nothing is read
    until used, so MiniLM's 90 MB open in milliseconds (safetensors' own NumPy loader reads and copies all of
    it, a tenth of a second). ValueError if the file is not a well-formed safetensors file of these types."""
    try:
        raw = np.memmap(file, dtype=np.uint8, mode="r")
        size = int(raw[:8].view("<u8")[0]) if len(raw) >= 8 else -1
        if not 0 < size <= len(raw) - 8:
            raise ValueError("no safetensors header")
        header = json.loads(bytes(raw[8:8 + size]))
        metadata = header.pop("__metadata__", None) or {}
        data = raw[8 + size:]
        tensors = {}
        for name, info in header.items():
            dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
            start, end = info["data_offsets"]
            shape = tuple(int(n) for n in info["shape"])
            if not 0 <= start <= end <= len(data) or end - start != math.prod(shape) * dtype.itemsize:
                raise ValueError(f"{name}: data outside the file")
            tensors[name] = data[start:end].view(dtype).reshape(shape)
    except (OSError, KeyError, TypeError, AttributeError, ValueError) as err:  # json's errors are ValueErrors
        raise ValueError(f"{file}: not a safetensors file this reader takes ({err})") from None
    return tensors, metadata


def _cached_kernels(file: Path, key: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray] | None:
    try:
        kernels, metadata = mapped_safetensors(file)
    except ValueError:
        return None
    if metadata.get("encoder") != key or {n: k.shape for n, k in kernels.items()} != shapes \
            or any(k.dtype != np.float32 for k in kernels.values()):
        return None
    return kernels


def save_derived(file: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Writes a safetensors file of derived data whole or not at all (a process reading the old one keeps it);
    where it cannot be written (read-only, full), nothing is kept and nothing fails."""
    from safetensors.numpy import save_file

    with contextlib.suppress(OSError), atomic_path(file) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def encoder_key(adapter: str | Path | None) -> str:
    """Names one encoder: the bundled base model (its configuration and tokenizer, its weights' size and time)
    and the adapter's files. Embeddings or weights of another encoder never mix with these."""
    from registry.embedding import minilm_path

    base = minilm_path()
    digest = hashlib.sha256(str(base).encode())
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "sentence_bert_config.json"):
        if (base / name).is_file():
            digest.update(name.encode() + b"\0" + (base / name).read_bytes())
    weights = (base / "model.safetensors").stat()  # 90 MB: named by size and time, not hashed at every start
    digest.update(f"{weights.st_size}:{weights.st_mtime_ns}".encode())
    for file in sorted(Path(adapter).iterdir()) if adapter is not None else ():
        if file.is_file():
            digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


class TorchMiniLM:
    """The PyTorch path (sentence-transformers and PEFT), for what `NumpyMiniLM` does not reproduce."""

    runtime = "torch"

    def __init__(self, adapter: Path | None) -> None:
        from assistant.selector.encoder import load_encoder

        self.model = load_encoder(adapter)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        from assistant.selector.encoder import encode_batched

        return encode_batched(self.model, list(texts), BATCH).numpy()


#: The merged projections of the selector's encoder, in the cache folder (`assistant.paths.cache_dir`).
KERNELS_CACHE = "selector-encoder.safetensors"


def load_runtime(adapter: Path | None = None) -> Encoder:
    """The bundled MiniLM (with `adapter` merged) in NumPy, else through PyTorch."""
    from assistant.paths import cache_dir
    from registry.embedding import minilm_path

    try:
        return NumpyMiniLM.load(minilm_path(), adapter, cache_dir() / KERNELS_CACHE)
    except Unsupported:
        return TorchMiniLM(adapter)
