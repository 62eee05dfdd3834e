"""The offline Plugin-Selector: MiniLM (with a trained LoRA adapter) and nearest-neighbour scoring against
example requests, so a plugin registered after training is selectable at once through its manifest's examples.

A request is split into clauses. Each clause is scored against every *label*: each task any plugin or the
shipped data knows, plus "null" (out of scope). A label's score is the mean cosine of the clause to its `k`
closest examples: the shipped training requests for that task, plus the examples of every candidate plugin
serving it. The clause goes to the best label; "null", or a task no enabled plugin serves, selects nothing.
Plugins come out in the order the user named them, each with the clause that asked for it. A plugin the user
installed wins a clause its own examples say at least as closely as any example of the task that won (`select`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, Field

from assistant.selector.cache import EmbeddingCache
from assistant.selector.clauses import check_request, split_clauses
from assistant.selector.runtime import Encoder, encoder_key, load_runtime
from plugins.errors import BadInput, MissingFile
from registry.embedding import MINILM

WEIGHTS = Path(__file__).parent / "weights"
NULL = "null"
CONFIG_FILE = "selector.json"
ADAPTER_FOLDER = "adapter"
BANK_TEXTS = "bank.json"
BANK_EMBEDDINGS = "bank.safetensors"
#: The embeddings of the enabled plugins' examples, kept in the registry folder between calls.
EXAMPLES_CACHE = "selector-examples.safetensors"


class SelectorConfig(BaseModel):
    """What a trained selector folder records besides its tensors (`selector.json`)."""

    encoder: str = Field(MINILM, description="Sentence encoder the adapter belongs to.")
    k: int = Field(3, ge=1, description="Closest examples averaged into a label's score.")
    temperature: float = Field(0.05, gt=0, description="Softmax temperature turning label scores into a score.")
    null_bias: float = Field(0.0, description="Learned offset added to the out-of-scope score.")
    claim: float = Field(0.85, description="Cosine to an example of a plugin for a new task above which a "
                                          "shipped out-of-scope example no longer counts.")
    veto_margin: float = Field(0.1, description="By how much the whole request must read as out of scope for "
                                                "it to select nothing, whatever its clauses say.")
    installed_margin: float = Field(0.01, description="By how much the winning task's closest example may be "
                                                      "closer than an installed plugin's closest own example for "
                                                      "the plugin to win still (about as close; the bank's float16 "
                                                      "storage alone moves cosines by ~1e-3).")
    training: dict[str, Any] = Field(default_factory=dict, description="Steps, seed, data and loss of the run.")


@dataclass
class SupportBank:
    """Labelled example requests and their embeddings under the selector's encoder."""

    texts: list[str]
    labels: list[str]
    embeddings: np.ndarray  # [n, d] float32, unit rows

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        (folder / BANK_TEXTS).write_text(json.dumps({"texts": self.texts, "labels": self.labels}, indent=0) + "\n")
        save_file({"embeddings": np.ascontiguousarray(self.embeddings, dtype=np.float16)}, folder / BANK_EMBEDDINGS)

    @classmethod
    def load(cls, folder: Path) -> SupportBank:
        from safetensors.numpy import load_file

        data = json.loads((folder / BANK_TEXTS).read_text())
        embeddings = load_file(folder / BANK_EMBEDDINGS)["embeddings"].astype(np.float32)
        if len(data["texts"]) != len(data["labels"]) or embeddings.shape[0] != len(data["texts"]):
            raise BadInput(f"{folder}: {BANK_TEXTS} and {BANK_EMBEDDINGS} disagree on the number of examples")
        return cls(data["texts"], data["labels"], embeddings)


@dataclass(frozen=True)
class Candidate:
    """A plugin the selector may pick: its id, the task it serves, and example requests from its manifest."""

    id: str
    task: str
    examples: tuple[str, ...]
    runnable: bool = True  # enabled, trusted and with its weights: preferred over one that cannot run yet
    installed: bool = False  # the user's own (installed, not shipped): wins on its own examples, see `select`


@dataclass
class SelectedPlugin:
    id: str
    task: str
    score: float
    clause: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "task": self.task, "score": round(self.score, 4)}


@dataclass
class Selection:
    """Plugins in the order the user named them; `clauses` keeps the request's parts for the planner."""

    plugins: list[SelectedPlugin]
    clauses: list[str] = field(default_factory=list)
    mode: str = "offline"
    notes: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> bool:
        return not self.plugins

    @property
    def tasks(self) -> list[str]:
        return [p.task for p in self.plugins]

    def to_json(self) -> dict[str, Any]:
        return {"plugins": [p.to_json() for p in self.plugins], "rejected": self.rejected,
                "clauses": [{"text": c, "plugins": [p.id for p in self.plugins if p.clause == k]}
                            for k, c in enumerate(self.clauses)],
                "mode": self.mode, "notes": self.notes}


class Selector(Protocol):
    """What the planner asks of a selector: the offline one, or the one that also looks at the photo."""

    candidates: list[Candidate]

    def select(self, text: str) -> Selection: ...


def label_k(k: int, count: int) -> int:
    """How many of a label's `count` closest examples its score averages: `k`, but at most half of them
    (rounded up), so that a plugin known from its few manifest examples is scored on its close ones, not on every
    example it has, while the shipped tasks' hundreds of examples are scored on `k`."""
    return min(k, (count + 1) // 2)


def label_scores(queries: np.ndarray, support: np.ndarray, support_labels: np.ndarray, n_labels: int,
                 k: int) -> np.ndarray:
    """[n_queries, n_labels]: per label, the mean cosine to its `k` closest support rows (-1 if it has none).
    Training optimises the same score, differentiably (`train.label_scores`; the two agree, see
    tests/test_cold_start.py): what is trained is what is used."""
    order = np.argsort(support_labels, kind="stable")
    bounds = np.searchsorted(support_labels[order], np.arange(n_labels + 1))
    similarity = (queries @ support.T)[:, order]  # each label's rows side by side
    scores = np.full((len(queries), n_labels), -1.0, dtype=np.float32)
    for label in range(n_labels):
        columns = similarity[:, bounds[label]:bounds[label + 1]]
        take = label_k(k, columns.shape[1])
        if take:
            scores[:, label] = -np.partition(-columns, take - 1, axis=1)[:, :take].mean(axis=1)
    return scores


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class OfflineSelector:
    """Selects among `candidates` with a trained encoder and the shipped support bank."""

    mode = "offline"

    def __init__(self, encoder: Encoder, bank: SupportBank, candidates: Sequence[Candidate],
                 config: SelectorConfig, cache: EmbeddingCache | None = None) -> None:
        if not candidates:
            raise BadInput("no plugins to select from: enable or install some (`diffplugin plugins list`)")
        self.encoder = encoder
        self.config = config
        self.notes: list[str] = []  # said with every selection (e.g. why the photo was not used)
        self.candidates = list(candidates)
        self.served = {c.task for c in self.candidates}
        self.labels = [*sorted({*bank.labels, *self.served} - {NULL}), NULL]
        index = {label: i for i, label in enumerate(self.labels)}
        examples = [(e, c) for c in self.candidates for e in c.examples]
        texts = [e for e, _ in examples]
        if not examples:
            example_embeddings = bank.embeddings[:0]
        else:
            example_embeddings = cache.embed(encoder, texts) if cache else encoder.embed(texts)
        # A plugin for a task the shipped data does not know claims the requests its examples describe: shipped
        # out-of-scope examples close to them go ("colorize this old photo" is out of scope until a colorize
        # plugin is installed). Known tasks keep their hard negatives ("add rain" stays out of scope).
        keep = [i for i, label in enumerate(bank.labels) if label != NULL]
        nulls = [i for i, label in enumerate(bank.labels) if label == NULL]
        new_task = [k for k, (_, c) in enumerate(examples) if c.task not in bank.labels]
        if nulls and new_task:
            claimed = (bank.embeddings[nulls] @ example_embeddings[new_task].T).max(axis=1) >= config.claim
            nulls = [i for i, c in zip(nulls, claimed.tolist(), strict=True) if not c]
        rows = sorted(keep + nulls)
        self._support = np.concatenate([bank.embeddings[rows], example_embeddings])
        self._support_labels = np.array([index[bank.labels[i]] for i in rows] + [index[c.task] for _, c in examples],
                                        dtype=np.int64)
        # Per candidate, the rows of its own examples: they decide between plugins serving the same task.
        offset = len(rows)
        self._own_rows: dict[int, list[int]] = {}
        for row, (_, candidate) in enumerate(examples):
            self._own_rows.setdefault(self.candidates.index(candidate), []).append(offset + row)

    @classmethod
    def load(cls, candidates: Sequence[Candidate], weights: str | Path = WEIGHTS,
             cache_folder: Path | None = None) -> OfflineSelector:
        """The trained selector in `weights`; with `cache_folder`, the examples' embeddings are kept there."""
        weights = Path(weights)
        if not (weights / CONFIG_FILE).is_file():
            raise MissingFile(f"{weights}: no {CONFIG_FILE}; not a trained selector folder "
                              "(train one with `diffplugin train selector`)")
        config = SelectorConfig.model_validate_json((weights / CONFIG_FILE).read_text())
        cache = EmbeddingCache(cache_folder / EXAMPLES_CACHE, encoder_key(weights / ADAPTER_FOLDER)) if cache_folder \
            else None
        return cls(load_runtime(weights / ADAPTER_FOLDER), SupportBank.load(weights), candidates, config, cache)

    def select(self, text: str) -> Selection:
        check_request(text)
        clauses = split_clauses(text)
        several = len(clauses) > 1
        queries = self.encoder.embed([*clauses, text] if several else clauses)
        scores = label_scores(queries, self._support, self._support_labels, len(self.labels), self.config.k)
        scores[:, -1] += self.config.null_bias
        # A request that as a whole reads as out of scope asks for nothing, even if a clause alone would ("what's
        # the forecast for the weekend, any rain?"). Two clauses that each ask for a task are not an accident of
        # wording: "remove the rain, make it brighter and put my cat in a hat" plans the two and names the hat.
        asking = sum(int(row.argmax()) != len(self.labels) - 1 for row in scores[:-1]) if several else 0
        whole_rejected = several and asking < 2 and \
            float(scores[-1, -1] - scores[-1, :-1].max()) > self.config.veto_margin
        # An installed plugin may be asked for in words its example splits into clauses ("the picture is a bit
        # soft, add some sharpness"): the whole request then goes to it, except clauses that ask for another task.
        whole_label = int(scores[-1].argmax()) if several else -1
        whole = self._installed_match(whole_label, queries[-1]) if several and not whole_rejected else None
        if several:
            scores, queries = scores[:-1], queries[:-1]
        confidence = softmax(scores / np.float32(self.config.temperature))
        chosen: dict[str, SelectedPlugin] = {}
        notes = list(self.notes)
        for k, clause in enumerate(clauses):
            best = int(scores[k].argmax())
            task = self.labels[best]
            if whole_rejected:
                continue
            plugin: Candidate | None
            if whole and best in (whole_label, len(self.labels) - 1):
                plugin, rival, said = whole, self.labels[whole_label], text
            else:
                plugin, rival, said = self._installed_match(best, queries[k]), task, clause
            if plugin:
                # The user installed a plugin whose own examples say this about as closely as any request the
                # winning label is known from: the shipped data's many examples of a nearby task ("sharpen it"
                # for deblur) or of out-of-scope requests must not hide it. A task it beat is named, so that the
                # user can still ask for that one.
                if rival != NULL:
                    other = f"{rival} ({self._pick(rival, queries[k]).id})" if rival in self.served else rival
                    note = f"'{said}' also fits {other}; chose {plugin.id}, the installed plugin whose own " \
                           "examples match it"
                    notes += [note] if note not in notes else []
                task = plugin.task
            elif task == NULL:
                continue
            if task in chosen:  # named again: keep its first position, with the surer score
                chosen[task].score = max(chosen[task].score, float(confidence[k, best]))
                continue
            if task not in self.served:
                notes.append(f"'{clause}' asks for {task}, which no enabled plugin does")
                continue
            plugin = plugin or self._pick(task, queries[k])
            chosen[task] = SelectedPlugin(plugin.id, task, float(confidence[k, best]), k)
        return Selection(list(chosen.values()), clauses, self.mode, notes)

    def _installed_match(self, label: int, query: np.ndarray) -> Candidate | None:
        """An installed plugin for another task than `label` whose closest own example is about as close to the
        clause as the closest example of `label` (shipped requests and manifests alike), or closer; the closest
        such one."""
        rivals = self._support[self._support_labels == label]
        rival = float((rivals @ query).max()) if len(rivals) else -1.0
        best: tuple[float, Candidate] | None = None
        for i, candidate in enumerate(self.candidates):
            rows = self._own_rows.get(i)
            if not candidate.installed or candidate.task == self.labels[label] or not rows:
                continue
            own = float((self._support[rows] @ query).max())
            if own >= rival - self.config.installed_margin and (best is None or own > best[0]):
                best = (own, candidate)
        return best[1] if best else None

    def _pick(self, task: str, query: np.ndarray) -> Candidate:
        """Among the plugins serving `task`, one that can run; among those, the one whose own examples are
        closest (the first on a tie)."""
        serving = [i for i, c in enumerate(self.candidates) if c.task == task]
        serving = [i for i in serving if self.candidates[i].runnable] or serving
        if len(serving) == 1:
            return self.candidates[serving[0]]

        def closeness(i: int) -> float:
            rows = self._own_rows.get(i)
            return float((self._support[rows] @ query).max()) if rows else -1.0

        return self.candidates[max(serving, key=lambda i: (closeness(i), -i))]
