"""The Plugin-Selector's learned heads (the official `PromptTunnerModel`, `tunner_for_visual=True`).

[`SelectorHeads`] holds only the two projections and the logit scale, with the official tensor names, so
`PromptTunner.pt` converts without renaming. [`PaperSelector`] adds what the official demo scores with (SD's CLIP
text encoder and tokenizer, the " " null candidate, θ = 0), spec §5.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from transformers import CLIPTextModel, CLIPTokenizer

from plugins.diffplugin.modeling import register_to_config
from plugins.errors import BadInput, MissingFile

__all__ = ["NULL_PROMPT", "PaperSelector", "SelectorHeads"]

#: The official null candidate's text: a single space (spec §5, "Visual side").
NULL_PROMPT = " "


class SelectorHeads(ModelMixin, ConfigMixin):  # type: ignore[misc]  # diffusers: bases disagree on config_name
    r"""Visual and text projection heads of the Plugin-Selector.

    Args:
        embed_dim (`int`, *optional*, defaults to 768): Width of TPB tokens and of the text embedding.
        logit_scale_init (`float`, *optional*, defaults to log(1/0.07)): CLIP's initial temperature.
    """

    @register_to_config
    def __init__(self, embed_dim: int = 768, logit_scale_init: float = math.log(1 / 0.07)) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # diffusers' ModelMixin.__init__ is unannotated
        self.logit_scale = nn.Parameter(torch.tensor(logit_scale_init))
        self.proj_v = nn.Linear(embed_dim, embed_dim)
        self.proj_t = nn.Linear(embed_dim, embed_dim)

    def embed_visual(self, prompts: torch.Tensor) -> torch.Tensor:
        """Plugin prompts [n, N, D] -> max-pool over tokens -> `proj_v` -> unit vectors [n, D]."""
        return F.normalize(self.proj_v(prompts.amax(dim=1)), dim=-1)

    def embed_text(self, text: torch.Tensor) -> torch.Tensor:
        """Pooled text embeddings [B, D] -> `proj_t` -> unit vectors [B, D]."""
        return F.normalize(self.proj_t(text), dim=-1)

    def forward(self, prompts: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Scores [B, n]: exp(logit_scale) * cosine(text, plugin)."""
        return self.logit_scale.exp() * self.embed_text(text) @ self.embed_visual(prompts).T


class PaperSelector:
    r"""The official Plugin-Selector inference (spec §5, "paper mode").

    Scores a request against the TPB outputs of the loaded plugins on the input image, plus a "null" candidate,
    by exp(logit_scale) × cosine between `proj_t(text)` and `proj_v(max-pooled prompt tokens)`.

    Args:
        heads ([`SelectorHeads`]): The converted `PromptTunner.pt`.
        text_encoder (`transformers.CLIPTextModel`): SD-1.x's text encoder; its `pooler_output` is the text feature.
        tokenizer (`transformers.CLIPTokenizer`): SD-1.x's tokenizer.
    """

    def __init__(self, heads: SelectorHeads, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer) -> None:
        self.heads = heads
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        check_tokenizer(tokenizer, "tokenizer")
        hidden = text_encoder.config.hidden_size
        if heads.config["embed_dim"] != hidden:
            raise BadInput(
                f"the selector heads expect {heads.config['embed_dim']}-d features but the text encoder gives "
                f"{hidden}-d ones: use the text encoder of the base model the selector was trained with "
                "(SD-1.x, 768-d)."
            )
        if len(tokenizer) > text_encoder.config.vocab_size:
            raise BadInput(f"the tokenizer has {len(tokenizer)} tokens but the text encoder only "
                             f"{text_encoder.config.vocab_size} embeddings: they come from different models.")

    @classmethod
    def from_pretrained(
        cls,
        selector_dir: str | Path,
        text_encoder_dir: str | Path,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> PaperSelector:
        r"""Load the converted heads and the text encoder + tokenizer.

        Args:
            selector_dir (`str` or `Path`): A folder written by the converter (`plugin_selector/`).
            text_encoder_dir (`str` or `Path`): A folder (or SD-1.x hub id) with `text_encoder/` and `tokenizer/`
                subfolders, e.g. `models/selector_text` from `diffplugin models pull`.
            dtype (`torch.dtype`, *optional*, defaults to `torch.float32`): Weights dtype.
            device (`str` or `torch.device`, *optional*, defaults to `"cpu"`): Where to run.
        """
        selector_dir = Path(selector_dir)
        if not (selector_dir / "config.json").is_file():
            raise MissingFile(
                f"{selector_dir}: no config.json, so not a converted Plugin-Selector folder. Convert the official "
                "plugin_selector/PromptTunner.pt with `diffplugin models convert` (or `diffplugin models pull`)."
            )
        local = Path(text_encoder_dir)
        # A local folder is checked up front: transformers would otherwise treat a missing one as a hub id.
        if local.is_dir():
            for needed in (local / "text_encoder" / "config.json", local / "tokenizer"):
                if not needed.exists():
                    raise MissingFile(
                        f"{local}: no {needed.relative_to(local)}. Pass a folder holding the SD-1.x text_encoder/ "
                        "and tokenizer/ (`diffplugin models pull` writes one as models/selector_text/)."
                    )
        try:
            text_encoder = CLIPTextModel.from_pretrained(text_encoder_dir, subfolder="text_encoder", dtype=dtype)
            tokenizer = CLIPTokenizer.from_pretrained(text_encoder_dir, subfolder="tokenizer")
        except OSError as err:
            raise MissingFile(
                f"{text_encoder_dir}: could not load text_encoder/ and tokenizer/ from it: "
                f"{str(err).splitlines()[0]}"
            ) from err
        check_tokenizer(tokenizer, f"{text_encoder_dir}/tokenizer")
        heads = SelectorHeads.from_pretrained(selector_dir, dtype=dtype)
        selector = cls(heads, text_encoder, tokenizer)
        selector.heads.to(device=device)  # type: ignore[call-arg]  # typeshed's functools.wraps loses `self`
        selector.text_encoder.to(device=device)  # type: ignore[call-arg]  # (diffusers and transformers wrap `to`)
        selector.heads.eval()
        selector.text_encoder.eval()
        return selector

    @property
    def device(self) -> torch.device:
        return self.heads.logit_scale.device

    @property
    def dtype(self) -> torch.dtype:
        return self.heads.logit_scale.dtype

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """`pooler_output` of the text encoder (EOS token after the final LN, no text projection): [B, D]."""
        tokens = self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        output = self.text_encoder(input_ids=tokens.input_ids.to(self.text_encoder.device))
        pooled: torch.Tensor = output.pooler_output
        return pooled.to(device=self.device, dtype=self.dtype)

    @torch.no_grad()
    def scores(self, text: str, prompts: Mapping[str, torch.Tensor]) -> dict[str | None, float]:
        r"""Raw scores, exp(logit_scale) × cosine, of `text` against each plugin and the null candidate.

        Args:
            text (`str`): The user's request.
            prompts (`Mapping[str, torch.Tensor]`): Task name -> that plugin's TPB output on the input image,
                [N, D] or [1, N, D]; every plugin has the same N.

        Returns:
            `dict[str | None, float]`: One score per task, in the order of `prompts`, then `None` (null).
        """
        stacked: list[torch.Tensor] = []
        for task, prompt in prompts.items():
            if prompt.ndim == 3 and prompt.shape[0] == 1:
                prompt = prompt[0]
            if prompt.ndim != 2 or prompt.shape[-1] != self.heads.config["embed_dim"]:
                raise ValueError(f"prompts[{task!r}]: expected [N, {self.heads.config['embed_dim']}] or "
                                 f"[1, N, {self.heads.config['embed_dim']}], got {list(prompt.shape)}.")
            stacked.append(prompt.to(device=self.device, dtype=self.dtype))
        if len({p.shape[0] for p in stacked}) > 1:
            raise ValueError(f"prompts: token counts differ ({[p.shape[0] for p in stacked]}); every plugin's TPB "
                             "must run on the same input image.")
        rows = stacked[0].shape[0] if stacked else 1
        text_features, null_features = self.text_embeddings([text, NULL_PROMPT]).split(1)
        # The null candidate is a text feature broadcast over the token rows and sent through the *visual* head,
        # as in the official demo; max-pooling the copies gives the feature back, so it scores like any plugin.
        candidates = torch.stack([*stacked, null_features.expand(rows, -1)])
        visual = self.heads.embed_visual(candidates)
        query = self.heads.embed_text(text_features)
        values = (self.heads.logit_scale.exp() * query @ visual.T)[0].float().tolist()
        keys: list[str | None] = [*prompts, None]
        return dict(zip(keys, values, strict=True))

    def select(self, text: str, prompts: Mapping[str, torch.Tensor]) -> list[tuple[str, float]]:
        r"""The official selection rule on [`scores`]: the plugins to run, best first.

        As spec §5 states it: negative scores are clamped to 0; if every score is then 0 the null slot is set
        to 1; θ = 0, so every candidate scoring > 0 is selected; the null candidate stands for "leave the image
        as it is" and is never returned. Interpretation: the spec gives the null candidate no veto, so when null
        scores best but some plugins also score > 0, those plugins are still selected; the result is empty (the
        input is returned unchanged) only when no plugin scores > 0. The official code runs the selected plugins
        in its fixed task order, not by score; reordering is the caller's job.

        Returns:
            `list[tuple[str, float]]`: (task, clamped score) for each selected plugin, by score descending (ties
            keep the order of `prompts`); empty when the request is task-irrelevant.
        """
        clamped = {task: max(score, 0.0) for task, score in self.scores(text, prompts).items()}
        if not any(clamped.values()):
            clamped[None] = 1.0  # the official fallback: nothing relevant, so "null" wins and nothing runs
        selected = [(task, score) for task, score in clamped.items() if task is not None and score > 0]
        return sorted(selected, key=lambda item: -item[1])


def check_tokenizer(tokenizer: CLIPTokenizer, where: str) -> None:
    """Refuse a tokenizer that cannot tokenize text.

    transformers builds a CLIPTokenizer from nothing but its special tokens (2 entries) when the vocabulary files
    are missing, e.g. a hub id offline; it then maps every word to <|endoftext|> and every request scores alike.
    """
    probe = tokenizer("remove the rain", add_special_tokens=False).input_ids
    if len(tokenizer) <= 2 or not probe or all(i == tokenizer.unk_token_id for i in probe):
        raise BadInput(
            f"{where}: the tokenizer has {len(tokenizer)} tokens and cannot tokenize text; its vocab.json and "
            "merges.txt (or tokenizer.json) are missing. Pass the SD-1.x tokenizer/ folder."
        )
