"""The whole Diff-Plugin workflow on a tiny random model, on CPU, in seconds.

    python examples/tiny_end_to_end.py [OUTPUT_DIR]

1. build a tiny random base model and save it in diffusers layout;
2. make a paired rain dataset from the bundled photo;
3. train a derain plugin for a few steps;
4. load base and plugin back with `from_pretrained` and restore a rainy photo.

The weights are random, so the "restored" photo is not meaningful: the point is that every step runs through
the same code that real weights use (`diffplugin models pull` fetches those).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import PIL.Image
import torch

from plugins.data.degradations import degrade
from plugins.data.pairs import make_paired_dataset
from plugins.diffplugin.pipeline import DiffPluginPipeline
from plugins.diffplugin.plugin import TaskPlugin
from plugins.diffplugin.tiny import make_tiny_base
from plugins.diffplugin.train import TrainConfig, train_plugin

PHOTO = Path(__file__).parent / "photos" / "chelsea.jpg"


def main(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    make_tiny_base(out / "base")

    clean = out / "clean"
    clean.mkdir(exist_ok=True)
    PIL.Image.open(PHOTO).resize((96, 64)).save(clean / "chelsea.png")
    csv = make_paired_dataset(clean, out / "rain-pairs", ["rain"], per_image=2)

    result = train_plugin(
        TrainConfig(data=csv, task="derain", output_dir=out / "training", base=str(out / "base"), resolution=32,
                    max_train_steps=5, learning_rate=1e-3, scale_lr=False, num_validation_images=0),
    )

    pipe = DiffPluginPipeline.from_base(out / "base")
    plugin = TaskPlugin.from_pretrained(result.plugin)
    rainy = degrade(PIL.Image.open(PHOTO).resize((96, 64)), ["rain"], seed=1)
    restored = pipe(rainy, plugin, short_side=64, generator=torch.Generator().manual_seed(42)).images[0]
    rainy.save(out / "rainy.png")
    restored.save(out / "restored.png")
    print(f"trained {result.global_step} steps (loss {result.last_loss:.3f}); wrote {out / 'restored.png'}")
    return out / "restored.png"


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="diffplugin-example-")))
