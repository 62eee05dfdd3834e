"""Every script in examples/ runs as documented."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import PIL.Image
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def test_there_are_examples() -> None:
    assert EXAMPLES


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    written = list(tmp_path.rglob("*.png"))  # each example writes its results into the folder it is given
    assert written and all(PIL.Image.open(p).size[0] > 0 for p in written)


def test_readme_main_job_edits_the_example_photo(tmp_path: Path) -> None:
    """README's first command, as a new user runs it (no weights): the photo gets dehazed and brightened, and ends
    up closer to the clean photo it was made from (skimage's rocket with synthetic haze and darkness). It used to
    go from 17.2 to 12.1 dB: lowlight blew the dusk out to noon."""
    import json
    import shlex

    import numpy as np

    install = next(line for line in (ROOT / "README.md").read_text().splitlines()
                   if line.startswith("pip install") and "diffplugin edit" in line)
    args = shlex.split(install.split("&& diffplugin ", 1)[1])
    from typer.testing import CliRunner

    from assistant.cli import app

    output = tmp_path / "out.png"
    args[args.index("-o") + 1] = str(output)
    args[1] = str(ROOT / args[1])  # the README runs from the repository root
    result = CliRunner().invoke(app, [*args, "--json"], env={"DIFFPLUGIN_HOME": str(tmp_path / "home")})
    assert result.exit_code == 0, result.output

    plan = json.loads(result.stdout)["plan"]
    from assistant.planning.policy import OrderPolicy

    assert [s["task"] for s in plan["steps"]] == OrderPolicy.load().order(["dehaze", "lowlight"])[0]
    before = np.asarray(PIL.Image.open(args[1]).convert("L"), dtype=float)
    after = np.asarray(PIL.Image.open(output).convert("L"), dtype=float)
    assert after.mean() > before.mean() + 10 and after.std() > before.std()  # brighter, more contrast
    from skimage import data as skimage_data
    from skimage.metrics import peak_signal_noise_ratio

    original = skimage_data.rocket()
    psnr_before = peak_signal_noise_ratio(original, np.asarray(PIL.Image.open(args[1]).convert("RGB")))
    psnr_after = peak_signal_noise_ratio(original, np.asarray(PIL.Image.open(output).convert("RGB")))
    assert psnr_after > psnr_before + 0.5, (psnr_before, psnr_after)
    assert (tmp_path / "out.png.plan.yaml").is_file()
