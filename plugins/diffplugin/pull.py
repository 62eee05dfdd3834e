"""`diffplugin models pull`: fetch the base model and the official plugins, and convert them.

Everything after the download (loading, converting, writing the models folder) is the same code whether the
sources are hub ids and URLs or local folders, so it is tested here on local folders.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import torch
from pydantic import BaseModel, Field

from plugins.diffplugin.convert import SELECTOR_FILE, SELECTOR_FOLDER, ConvertedItem, convert_official
from plugins.diffplugin.errors import PullError
from plugins.diffplugin.layout import BASE_FOLDER, PLUGINS_FOLDER, SELECTOR_TEXT_FOLDER
from plugins.diffplugin.pipeline import (
    DEFAULT_BASE,
    DEFAULT_IMAGE_ENCODER,
    DiffPluginPipeline,
    _is_complete_pipeline_folder,
)
from plugins.diffplugin.plugin import SETTINGS_FILE
from plugins.progress import Progress, ProgressEvent
from plugins.tasks import OFFICIAL

#: Where the official release keeps its weights (committed to the git repository itself, spec §3).
OFFICIAL_URL = "https://github.com/yuhaoliu7456/Diff-Plugin/raw/main/pre-trained"
OFFICIAL_TASKS = OFFICIAL  # the tasks the official release has weights for
OFFICIAL_TASK_FILES = ("scb/config.json", "scb/diffusion_pytorch_model.bin", "tpb.pt")


#: How long to wait for the hub to accept a connection before calling it unreachable.
HUB_PROBE_TIMEOUT_S = 10


class PullResult(BaseModel):
    models_dir: str
    base: str | None
    plugins: list[ConvertedItem]
    kept: list[str] = Field(default_factory=list, description="Already present, left as they were.")
    selector_text: str | None = Field(
        default=None, description="The folder with the base's text_encoder/ and tokenizer/ (paper-mode selector)."
    )
    notes: list[str] = Field(default_factory=list, description="What was skipped, and why; nothing failed.")


def load_base(base: str | Path, image_encoder: str | Path) -> DiffPluginPipeline:
    """The base model (hub id or folder) on CPU in fp32, for pulling or training. A source that cannot be had (no
    such folder; a hub id neither cached nor reachable) is refused before anything is downloaded, in one line."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    sources = {"--base": str(base)}
    if not _is_complete_pipeline_folder(base):  # such a folder holds its image encoder
        sources["--image-encoder"] = str(image_encoder)
    hub = {option: source for option, source in sources.items() if not Path(source).expanduser().exists()}
    for option, source in hub.items():
        try:
            validate_repo_id(source)
        except HFValidationError:
            raise PullError(f"{option} {source}: no such folder (and not a hub id)") from None
    for option, source in hub.items():
        problem = hub_problem(source)
        if problem:
            raise PullError(f"{option} {source}: {problem}; on a machine with internet access run "
                            f"{' and '.join(f'`hf download {s}`' for s in hub.values())} and pass "
                            f"{'them' if len(hub) > 1 else 'it'} as {' '.join(f'{o} DIR' for o in hub)}")
    try:
        return DiffPluginPipeline.from_base(base, image_encoder, device="cpu", dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise PullError(
            f"could not load the base model '{base}' with image encoder '{image_encoder}': "
            f"{str(err).splitlines()[0]}; pass diffusers folders of both: --base DIR --image-encoder DIR"
        ) from err


def hub_problem(repo_id: str) -> str | None:
    """Why the hub model `repo_id` cannot be loaded here, or None (it is in the local cache, or the hub answers).
    Asked before loading, because the loaders retry an unreachable hub for half a minute and then blame a missing
    config.json."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot_download(repo_id, local_files_only=True)
        return None
    except LocalEntryNotFoundError:
        pass
    if constants.HF_HUB_OFFLINE:
        return "not in the local Hugging Face cache, and HF_HUB_OFFLINE is set (unset it to download)"
    address = urllib.parse.urlsplit(constants.ENDPOINT)
    host = address.hostname or "huggingface.co"
    try:
        socket.create_connection((host, address.port or (443 if address.scheme == "https" else 80)),
                                 timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as err:
        return f"cannot be downloaded: no connection to {host} ({err.strerror or err})"
    return None


def pull_base(base: str, image_encoder: str, out_dir: Path) -> Path:
    """Load the base model (hub id or folder) on CPU in fp32 and save it as one self-contained folder."""
    pipe = load_base(base, image_encoder)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def pull_selector_text(base: str | Path, out_dir: Path) -> Path | None:
    """Save the base's `text_encoder/` and `tokenizer/` (fp32) into `out_dir`, or return None when the base has
    none (e.g. a folder written by `DiffPluginPipeline.save_pretrained`). Raises PullError if they fail to load."""
    from transformers import CLIPTextModel, CLIPTokenizer

    from plugins.diffplugin.selector import check_tokenizer

    local = Path(base).expanduser()
    if local.is_dir() and not (local / "text_encoder" / "config.json").is_file():
        return None
    try:
        text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder", dtype=torch.float32)
        tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
        # A missing tokenizer/ loads as a 2-token tokenizer rather than failing; catch it here, not at selection.
        check_tokenizer(tokenizer, f"{base}/tokenizer")
    except (OSError, ValueError) as err:
        raise PullError(f"could not load the text encoder of '{base}' for the Plugin-Selector: "
                        f"{str(err).splitlines()[0]}") from err
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    text_encoder.save_pretrained(tmp / "text_encoder")
    tokenizer.save_pretrained(tmp / "tokenizer")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def download_official(url: str, tasks: Sequence[str], dest: Path, progress: Progress | None = None) -> Path:
    """Download the official files of `tasks` (and the selector) from `url` into `dest`, laid out as published."""
    files = [f"{task}/{name}" for task in tasks for name in OFFICIAL_TASK_FILES]
    files.append(f"{SELECTOR_FOLDER}/{SELECTOR_FILE}")
    for relative in files:
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        address = f"{url.rstrip('/')}/{relative}"
        try:
            with urllib.request.urlopen(address, timeout=60) as response, target.open("wb") as out:
                # Not `response.length`: a file:// response has none; the header is there for both.
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                done = 0
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(ProgressEvent("download", done, total, relative))
        except (urllib.error.URLError, OSError) as err:
            raise PullError(
                f"could not download {address}: {err}; without internet access here, clone "
                "https://github.com/yuhaoliu7456/Diff-Plugin on a machine that has it and pass its pre-trained/ "
                "folder: --official DIR (or convert it directly: `diffplugin models convert DIR -o OUT`)"
            ) from err
    return dest


def pull(
    models_dir: str | Path,
    base: str | None = DEFAULT_BASE,
    image_encoder: str = DEFAULT_IMAGE_ENCODER,
    official: str | None = OFFICIAL_URL,
    tasks: Sequence[str] = OFFICIAL_TASKS,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> PullResult:
    """Fetch and convert into `models_dir`: `base/` (a complete pipeline folder), `selector_text/` (the base's
    text encoder and tokenizer, when it has them), `plugins/<task>/` and `plugin_selector/`. What is already
    there is kept unless `overwrite`, so a re-run fetches only what is missing.

    `base` and `image_encoder` are hub ids or folders (`base=None` skips the base model). `official` is the
    URL of the release's `pre-trained/` folder or a local copy of it (`None` skips the plugins).
    """
    models_dir = Path(models_dir)
    unknown = sorted(set(tasks) - set(OFFICIAL_TASKS))
    if unknown:
        raise PullError(f"unknown task(s) {', '.join(unknown)}; official tasks: {', '.join(OFFICIAL_TASKS)}.")
    source = _official_source(official) if official else None
    kept: list[str] = []
    notes: list[str] = []

    base_dir: Path | None = None
    text_dir: Path | None = None
    if base:
        base_dir = models_dir / BASE_FOLDER
        if (base_dir / "model_index.json").is_file() and not overwrite:
            kept.append(str(base_dir))
        else:
            pull_base(base, image_encoder, base_dir)
        text_dir = models_dir / SELECTOR_TEXT_FOLDER
        if (text_dir / "text_encoder" / "config.json").is_file() and not overwrite:
            kept.append(str(text_dir))
        else:
            # Only the paper-mode selector needs it; restoring with chosen plugins works without it, so a base
            # without one (or one that fails to load) is a note, not a failed pull of everything else.
            try:
                pulled = pull_selector_text(base, text_dir)
                reason = f"{base} has no text_encoder/"
            except PullError as err:
                pulled, reason = None, str(err)
            if pulled is None:
                text_dir = None
                notes.append(f"{reason}: skipped {SELECTOR_TEXT_FOLDER}/, which the paper's Plugin-Selector needs. "
                             "Pull again from an SD-1.x model (hub id or folder) to add it.")

    converted: list[ConvertedItem] = []
    if source is not None:
        plugin_dirs = {task: models_dir / PLUGINS_FOLDER / task for task in tasks}
        missing = [task for task, path in plugin_dirs.items() if overwrite or not (path / SETTINGS_FILE).is_file()]
        kept += [str(plugin_dirs[task]) for task in tasks if task not in missing]
        selector_dir = models_dir / SELECTOR_FOLDER
        with tempfile.TemporaryDirectory(prefix="diffplugin-official-") as tmp:
            if isinstance(source, str):
                source = download_official(source, missing, Path(tmp), progress) if missing else None
            if source is not None:
                for task in missing:
                    converted += convert_official(source / task, plugin_dirs[task], task, overwrite)
                if (source / SELECTOR_FOLDER / SELECTOR_FILE).is_file():
                    if (selector_dir / "config.json").is_file() and not overwrite:
                        kept.append(str(selector_dir))
                    else:
                        converted += convert_official(source / SELECTOR_FOLDER, selector_dir, overwrite=overwrite)
    return PullResult(models_dir=str(models_dir), base=str(base_dir) if base_dir else None, plugins=converted,
                      kept=kept, selector_text=str(text_dir) if text_dir else None, notes=notes)


def _official_source(official: str) -> Path | str:
    """A local folder (a clone of the official repository or its pre-trained/ folder) or an http(s) URL."""
    path = Path(official).expanduser()
    if path.is_dir():
        return path / "pre-trained" if (path / "pre-trained").is_dir() else path
    if official.startswith(("http://", "https://")):
        return official
    raise PullError(f"--official {official}: neither an existing folder nor an http(s) URL.")
