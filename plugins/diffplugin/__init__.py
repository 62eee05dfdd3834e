"""Diff-Plugin on current diffusers: Task-Plugins (TPB + SCB), their pipeline, conversion and training."""

import logging


class _HideTorchvisionNotice(logging.Filter):
    """transformers 5 announces that CLIP preprocessing falls back to PIL without torchvision. It works, and the
    project deliberately installs no torchvision (PyPI's breaks beside the CPU torch wheel). Installed here,
    before any submodule imports transformers, because the notice fires at import."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "CLIPImageProcessorPil" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_HideTorchvisionNotice())
