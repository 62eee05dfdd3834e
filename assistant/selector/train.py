"""Training the offline selector: multi-task contrastive learning across the tasks plus "null".

The encoder's LoRA adapter is trained so that every training clause is closer to its own label's examples
than to any other label's, scored exactly as at use (`label_scores`: mean cosine to the `k` closest examples),
with a softmax over labels (InfoNCE with labels as classes). Each step draws a balanced batch from every label
and scores it against the rest of the batch. Only the `train` split is used. Deterministic for a seed.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from assistant.selector.clauses import split_clauses
from assistant.selector.encoder import add_lora, encode, load_encoder
from assistant.selector.instructions import EXAMPLE_FILES, Instruction, training_set
from assistant.selector.model import ADAPTER_FOLDER, CONFIG_FILE, NULL, WEIGHTS, SelectorConfig, SupportBank, label_k
from plugins.errors import BadInput
from plugins.progress import Progress, ProgressEvent


class SelectorTrainConfig(BaseModel):
    steps: int = Field(100, ge=1, description="Optimiser steps.")
    seed: int = 0
    rank: int = Field(8, ge=1, description="LoRA rank.")
    learning_rate: float = Field(1e-3, gt=0)
    per_task: int = Field(12, ge=2, description="Clauses of each task per batch.")
    per_null: int = Field(48, ge=2, description="Out-of-scope clauses per batch.")
    k: int = Field(3, ge=1, description="Closest examples averaged into a label's score while training.")
    temperature: float = Field(0.05, gt=0)
    # The two settings at use were chosen on the val split (docs/selector.md, "How it trains"), with the voices
    # in the bank: more examples per label make a fourth neighbour informative.
    select_k: int = Field(4, ge=1, description="Closest examples averaged into a label's score at use.")
    null_bias: float | None = Field(0.02, description="Offset added to the out-of-scope score at use; None: the "
                                                     "one learned in training.")


def clause_examples(rows: Sequence[Instruction], encoder) -> tuple[list[str], list[str]]:
    """(texts, labels) as the selector sees requests at use: whole requests and their clauses.

    A single-task request's clause closest to its task keeps the label, and so does any other clause closer to the
    task than to out-of-scope requests; the rest ("thanks", "help") teach "null". A compound request whose clauses
    match its tasks one to one labels each clause. Clauses are matched with the plain encoder against each task's
    mean training request."""
    single = [r for r in rows if r.kind == "single"]
    tasks = sorted({r.tasks[0] for r in single})
    by_task = {t: [r.text for r in single if r.tasks[0] == t] for t in tasks}
    null = [r.text for r in rows if r.kind == "oos"] or ["thanks"]
    means = F.normalize(torch.stack([encode(encoder, texts).mean(0) for texts in (*by_task.values(), null)]), dim=-1)
    split = [(row, split_clauses(row.text)) for row in rows]
    clauses = sorted({part for _, parts in split if len(parts) > 1 for part in parts})
    closeness = dict(zip(clauses, (encode(encoder, clauses) @ means.T).tolist(), strict=True)) if clauses else {}
    texts: list[str] = []
    labels: list[str] = []
    for row, parts in split:
        if row.kind != "compound":
            texts.append(row.text)
            labels.append(row.tasks[0] if row.tasks else NULL)
        if len(parts) < 2:
            continue
        if row.kind == "oos":
            texts += parts
            labels += [NULL] * len(parts)
            continue
        wanted = [t for t in row.tasks if t in tasks]
        if not wanted:
            continue
        best = [_argmax([closeness[part][tasks.index(task)] for task in wanted]) for part in parts]
        if row.kind == "single":
            # Other clauses keep the task when they point to it ("make it crisp" in a deblur request); generic ones
            # ("clear it", "thanks") are null, so that they never select anything on their own.
            task = tasks.index(wanted[0])
            keep = max(range(len(parts)), key=lambda i: closeness[parts[i]][task])
            texts += parts
            labels += [row.tasks[0] if i == keep or _points_to(closeness[part], task) else NULL
                       for i, part in enumerate(parts)]
        elif len(parts) == len(wanted) and len(set(best)) == len(parts):
            texts += parts
            labels += [wanted[b] for b in best]
    return texts, labels


def _argmax(values: list[float]) -> int:
    """The position of the largest value (the first, on ties)."""
    return max(range(len(values)), key=values.__getitem__)


def _points_to(closeness: list[float], task: int) -> bool:
    """Whether a clause's closest task is `task` and it is closer to it than to out-of-scope requests (last)."""
    return max(range(len(closeness) - 1), key=closeness.__getitem__) == task and closeness[task] > closeness[-1]


def label_scores(queries: torch.Tensor, support: torch.Tensor, support_labels: torch.Tensor, n_labels: int,
                 k: int, exclude_self: bool = False) -> torch.Tensor:
    """`model.label_scores`, differentiable and batched for training (queries = support, `exclude_self`: a row is
    never its own neighbour). The selector at use runs without torch, hence two versions of one score; they
    agree (tests/test_cold_start.py)."""
    similarity = queries @ support.T
    if exclude_self:
        similarity = similarity - 4.0 * torch.eye(len(queries), dtype=similarity.dtype)
    # One padded [n_labels, most rows of a label] table of support rows, so every label is scored at once.
    counts = torch.bincount(support_labels, minlength=n_labels)
    order = torch.argsort(support_labels, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    width = max(int(counts.max()) if len(counts) else 0, 1)
    slot = torch.arange(width)
    valid = slot[None, :] < counts[:, None]
    rows = order[(starts[:, None] + slot[None, :]).clamp(max=max(len(order) - 1, 0))] if len(order) else None
    if rows is None:
        return torch.full((len(queries), n_labels), -1.0, dtype=similarity.dtype)
    table = similarity[:, rows].masked_fill(~valid, float("-inf"))  # [q, labels, width]
    top = table.topk(min(k, width), dim=2).values
    used = torch.tensor([label_k(k, int(count)) for count in counts])  # per label, as model.label_scores
    kept = torch.arange(top.shape[2])[None, None, :] < used[None, :, None]
    scores = torch.where(kept, top, torch.zeros((), dtype=top.dtype)).sum(dim=2) / \
        used.clamp(min=1).to(similarity.dtype)
    return torch.where(counts > 0, scores, torch.full_like(scores, -1.0))


def train_selector(
    config: SelectorTrainConfig | None = None,
    rows: Sequence[Instruction] | None = None,
    out_dir: str | Path = WEIGHTS,
    progress: Progress | None = None,
    examples: Sequence[Instruction] | None = None,
) -> Path:
    """Train on `rows` (default: the shipped training split) and write a selector folder to `out_dir` whose
    support bank holds `examples` (default: `rows` when given, else the shipped example files)."""
    config = config or SelectorTrainConfig()
    if rows is None:
        rows, examples = training_set(), training_set(EXAMPLE_FILES) if examples is None else examples
    rows = list(rows)
    examples = rows if examples is None else list(examples)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    encoder = load_encoder()
    texts, labels = clause_examples(rows, encoder)
    names = [*sorted(set(labels) - {NULL}), NULL]
    y = torch.tensor([names.index(label) for label in labels])
    pools = {i: [j for j in range(len(texts)) if y[j] == i] for i in range(len(names))}
    if any(len(p) < 2 for p in pools.values()):
        thin = [names[i] for i, p in pools.items() if len(p) < 2]
        raise BadInput(f"too few training requests for: {', '.join(thin)} (need at least 2 each)")
    peft_model = add_lora(encoder, config.rank)
    # How much closer a clause must be to a task than to out-of-scope requests: learned with the rest, on clauses
    # scored against the others of their batch (never themselves), as at use.
    null_bias = torch.nn.Parameter(torch.zeros(()))
    parameters = [*(p for p in peft_model.parameters() if p.requires_grad), null_bias]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.01)
    # OneCycleLR divides by `steps * pct_start - 1`, which is 0 for exactly 10 steps at 10%.
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.learning_rate,
                                                   total_steps=config.steps,
                                                   pct_start=0.1 if config.steps != 10 else 0.2)
    loss_value = float("nan")
    for step in range(config.steps):
        batch = [j for i, pool in pools.items()
                 for j in rng.sample(pool, min(len(pool), config.per_null if names[i] == NULL else config.per_task))]
        encoder.train()
        z = encode(encoder, [texts[j] for j in batch], grad=True)
        # Each clause is scored against the others in the batch, never against itself.
        scores = label_scores(z, z, y[batch], len(names), config.k, exclude_self=True)
        scores = torch.cat([scores[:, :-1], scores[:, -1:] + null_bias], dim=1)
        loss = F.cross_entropy(scores / config.temperature, y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        loss_value = loss.item()
        if progress:
            progress(ProgressEvent("train", step + 1, config.steps, loss=loss_value))
    encoder.eval()
    bank_texts, bank_labels = (texts, labels) if examples is rows else clause_examples(examples, load_encoder())
    return _save(peft_model, bank_texts, bank_labels, rows, examples, len(texts), config, loss_value,
                 null_bias.item(), Path(out_dir))


def _sha256(rows: Sequence[Instruction]) -> str:
    return hashlib.sha256(json.dumps([[r.text, r.tasks] for r in rows]).encode()).hexdigest()


def _save(peft_model, texts: list[str], labels: list[str], rows: Sequence[Instruction],
          examples: Sequence[Instruction], clauses: int, config: SelectorTrainConfig, loss: float,
          learned_null_bias: float, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    adapter = out_dir / ADAPTER_FOLDER
    shutil.rmtree(adapter, ignore_errors=True)
    peft_model.save_pretrained(str(adapter))
    (adapter / "README.md").unlink(missing_ok=True)  # PEFT's empty model-card template
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = SelectorConfig().encoder  # not this machine's path
    adapter_config["target_modules"] = sorted(adapter_config["target_modules"])  # PEFT writes a set, in any order
    (adapter / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
    merged = load_encoder(out_dir / ADAPTER_FOLDER)
    SupportBank(texts, labels, encode(merged, texts).numpy()).save(out_dir)
    # Bit-identical weights need the same data, seed, PyTorch and CPU thread count (docs/selector.md).
    record = {**config.model_dump(), "requests": len(rows), "clauses": clauses, "final_loss": round(loss, 4),
              "data_sha256": _sha256(rows), "bank_requests": len(examples), "bank_clauses": len(texts),
              "bank_data_sha256": _sha256(examples), "learned_null_bias": round(learned_null_bias, 5),
              "torch": torch.__version__, "threads": torch.get_num_threads()}
    null_bias = learned_null_bias if config.null_bias is None else config.null_bias
    selector = SelectorConfig(k=config.select_k, temperature=config.temperature, null_bias=round(null_bias, 5),
                              training=record)
    (out_dir / CONFIG_FILE).write_text(selector.model_dump_json(indent=2) + "\n")
    return out_dir
