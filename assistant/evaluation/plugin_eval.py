"""`diffplugin eval plugin`: run one plugin on every degraded image of a paired dataset and score it.

Outputs go to `OUT/outputs/NAME.png` as they are made, so an interrupted run resumes where it stopped (images
with an output are scored from it, not run again). `OUT/results.json` and `OUT/results.csv` hold the per-image
figures (for the output and for the untouched degraded input) and their means.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import PIL.Image

from assistant.evaluation.datasets import Pair
from assistant.evaluation.metrics import psnr_ssim
from plugins.atomic_files import write_atomic
from plugins.errors import BadInput
from plugins.progress import Progress, ProgressEvent

if TYPE_CHECKING:
    from assistant.executor import Executor
    from registry.store import Registry

FIELDS = ("image", "psnr", "ssim", "psnr_input", "ssim_input")


@dataclass
class PluginReport:
    plugin: str
    version: str
    data: str
    output: str
    images: list[dict[str, Any]] = field(default_factory=list)
    resumed: int = 0
    distribution: dict[str, Any] | None = None

    @property
    def mean(self) -> dict[str, float]:
        if not self.images:
            return {}
        return {key: round(float(np.mean([row[key] for row in self.images])), 4) for key in FIELDS[1:]}

    def to_json(self) -> dict[str, Any]:
        data = {"plugin": self.plugin, "version": self.version, "data": self.data, "output": self.output,
                "images": self.images, "mean": self.mean, "resumed": self.resumed}
        if self.distribution is not None:
            data["distribution"] = self.distribution
        return data


def evaluate_plugin(ref: str, pairs: Sequence[Pair], output: Path, registry: Registry, executor: Executor,
                    data: str = "", progress: Progress | None = None) -> PluginReport:
    """Run `ref` (plugin id or folder) on each pair's degraded image; score output and input against clean."""
    from assistant.photo_output import save_result
    from plugins.data.photos import load_photo

    plugin = executor.load(ref, registry)
    manifest = getattr(plugin, "manifest", None)
    report = PluginReport(ref, manifest.version if manifest else "folder", data, str(output))
    outputs = output / "outputs"
    for done, pair in enumerate(pairs):
        if progress:
            progress(ProgressEvent("evaluate", done, len(pairs), pair.name))
        degraded, clean = load_photo(pair.degraded), load_photo(pair.clean)
        target = outputs / f"{pair.name}.png"
        if target.is_file():
            restored = load_photo(target)
            report.resumed += 1
        else:
            restored = executor.run(degraded, [plugin]).image
            save_result(restored, target)
        try:
            psnr, ssim = psnr_ssim(restored, clean)
            psnr_in, ssim_in = psnr_ssim(degraded, clean)
        except ValueError as err:  # e.g. a dataset whose clean image is a few pixels larger
            raise BadInput(f"{pair.name} ({pair.degraded} vs {pair.clean}): {err}") from None
        report.images.append({"image": pair.name, "psnr": round(psnr, 4), "ssim": round(ssim, 4),
                              "psnr_input": round(psnr_in, 4), "ssim_input": round(ssim_in, 4)})
    if progress:
        progress(ProgressEvent("evaluate", len(pairs), len(pairs), "done"))
    return report


def write_report(report: PluginReport) -> list[Path]:
    """results.json and results.csv in the output folder (the CSV's last row holds the means)."""
    folder = Path(report.output)
    json_path, csv_path = folder / "results.json", folder / "results.csv"
    write_atomic(json_path, (json.dumps(report.to_json(), indent=2) + "\n").encode())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(report.images)
    if report.images:
        writer.writerow({"image": "mean", **report.mean})
    write_atomic(csv_path, buffer.getvalue().encode())
    return [json_path, csv_path]


def sheet_for(report: PluginReport, pairs: Sequence[Pair], limit: int = 12) -> PIL.Image.Image:
    """degraded | output | clean for the first `limit` images, with PSNR/SSIM under each."""
    from assistant.evaluation.sheet import SheetRow, contact_sheet
    from plugins.data.photos import load_photo

    rows = []
    for pair, row in list(zip(pairs, report.images, strict=True))[:limit]:
        out = load_photo(Path(report.output) / "outputs" / f"{pair.name}.png")
        rows.append(SheetRow(pair.name, [
            (load_photo(pair.degraded), f"degraded {row['psnr_input']:.2f} dB / {row['ssim_input']:.3f}"),
            (out, f"{report.plugin} {row['psnr']:.2f} dB / {row['ssim']:.3f}"),
            (load_photo(pair.clean), "clean"),
        ]))
    return contact_sheet(rows)
