"""Convert the official Diff-Plugin release to this project's safetensors folders.

The official files are pickles (`torch.save`). They are opened only with `torch.load(weights_only=True)`, which
refuses any pickled object that is not a tensor or a plain container, and rewritten as safetensors with the
tensor names unchanged. Accepted sources:

* a task folder, `pre-trained/<task>/` (`scb/config.json`, `scb/diffusion_pytorch_model.bin`, `tpb.pt`);
* the whole `pre-trained/` folder (every task folder in it, plus `plugin_selector/PromptTunner.pt`);
* a `plugin_selector/` folder or a `PromptTunner.pt` file.
"""

from __future__ import annotations

import inspect
import json
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import BaseModel

from plugins.diffplugin.errors import ConversionError
from plugins.diffplugin.plugin import SETTINGS_FILE, TaskPlugin
from plugins.diffplugin.scb import SCBNet
from plugins.diffplugin.selector import SelectorHeads
from plugins.diffplugin.settings import PluginSettings
from plugins.diffplugin.tpb import TPBNet
from plugins.errors import FileInTheWay

SELECTOR_FOLDER = "plugin_selector"
SELECTOR_FILE = "PromptTunner.pt"
SCB_WEIGHT_FILES = ("diffusion_pytorch_model.bin", "diffusion_pytorch_model.safetensors")
_CONFIG_BOOKKEEPING = {"_class_name", "_diffusers_version", "_name_or_path"}
#: ControlNet keys the official configs carry unused; a value other than these would describe another model.
_MUST_BE_UNUSED = {
    "global_pool_conditions": False,
    "class_embed_type": None,
    "num_class_embeds": None,
    "projection_class_embeddings_input_dim": None,
    "resnet_time_scale_shift": "default",
    "concat_input": False,
    "enable_mask": False,
}


class ConvertedItem(BaseModel):
    """What one conversion read and wrote."""

    kind: str  # "plugin" or "selector"
    name: str
    source: str
    output: str
    tensors: int
    parameters: int
    stripped_module_prefix: bool = False
    ignored_config_keys: list[str] = []


def load_pickled_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """Load an official pickle safely; unwrap `{'model': ...}` and strip DataParallel `module.` prefixes."""
    if not path.is_file():
        raise ConversionError(f"{path}: file not found.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError) as err:
        raise ConversionError(
            f"{path}: refused to load. It is not a plain tensor checkpoint that torch.load(weights_only=True) "
            f"accepts (it may run code when unpickled, or be damaged): {str(err).splitlines()[0]}"
        ) from err
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConversionError(f"{path}: expected a state dict of tensors (optionally under 'model').")
    stripped = all(k.startswith("module.") for k in obj)
    if stripped:
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj, stripped


def load_into(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: Path) -> None:
    """Strict load that names every missing, unexpected or misshapen tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshapen = [f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}"
                 for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    if missing or unexpected or misshapen:
        parts = [f"{label}: {', '.join(items[:5])}{' …' if len(items) > 5 else ''}"
                 for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen))
                 if items]
        raise ConversionError(f"{source}: does not match {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)


def read_scb(scb_dir: Path) -> tuple[SCBNet, list[str]]:
    config_file = scb_dir / "config.json"
    if not config_file.is_file():
        raise ConversionError(f"{config_file}: file not found (an official task folder has scb/config.json).")
    config = json.loads(config_file.read_text())
    known = set(inspect.signature(SCBNet.__init__).parameters) - {"self"}
    ignored = sorted(set(config) - known - _CONFIG_BOOKKEEPING)
    changed = [f"{k}={config[k]!r}" for k, unused in _MUST_BE_UNUSED.items() if config.get(k, unused) != unused]
    if changed:
        raise ConversionError(f"{config_file}: unsupported SCB configuration: {', '.join(changed)} (the official "
                              "plugins leave these unused).")
    try:
        scb = SCBNet(**{k: v for k, v in config.items() if k in known})
    except (TypeError, ValueError) as err:
        raise ConversionError(f"{config_file}: unsupported SCB configuration: {err}") from err
    weights = next((scb_dir / name for name in SCB_WEIGHT_FILES if (scb_dir / name).is_file()), None)
    if weights is None:
        raise ConversionError(f"{scb_dir}: no {' or '.join(SCB_WEIGHT_FILES)} found.")
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state_dict = load_file(weights)
    else:
        state_dict, _ = load_pickled_state_dict(weights)
    load_into(scb, state_dict, weights)
    return scb, ignored


def read_tpb(tpb_file: Path) -> tuple[TPBNet, bool]:
    state_dict, stripped = load_pickled_state_dict(tpb_file)
    linear = sorted(int(m.group(1)) for k, v in state_dict.items()
                    if (m := re.fullmatch(r"visual_projection\.(\d+)\.weight", k)) and v.ndim == 2)
    if not linear:
        raise ConversionError(f"{tpb_file}: no visual_projection.*.weight tensors; not a TPB checkpoint.")
    first = state_dict[f"visual_projection.{linear[0]}.weight"]
    last = state_dict[f"visual_projection.{linear[-1]}.weight"]
    tpb = TPBNet(clip_v_dim=first.shape[1], cross_attention_dim=last.shape[0], num_cross_proj_layers=len(linear) - 1)
    load_into(tpb, state_dict, tpb_file)
    return tpb, stripped


def read_selector(path: Path) -> tuple[SelectorHeads, bool]:
    state_dict, stripped = load_pickled_state_dict(path)
    if "proj_v.weight" not in state_dict:
        raise ConversionError(f"{path}: no proj_v.weight; not a Plugin-Selector checkpoint.")
    heads = SelectorHeads(embed_dim=state_dict["proj_v.weight"].shape[1])
    load_into(heads, state_dict, path)
    return heads, stripped


def _is_task_folder(path: Path) -> bool:
    return (path / "scb").is_dir() or (path / "tpb.pt").is_file()


def _count(module: torch.nn.Module) -> tuple[int, int]:
    state = module.state_dict()
    return len(state), sum(v.numel() for v in state.values())


def _check_replaceable(out_dir: Path, source: Path, overwrite: bool) -> None:
    """Refuse to replace anything but a folder this converter wrote, and never the source or a folder above it."""
    target = out_dir.resolve()
    if source.resolve().is_relative_to(target) or Path.cwd().resolve().is_relative_to(target):
        raise ConversionError(f"{out_dir}: the output must be a new folder, not the source, the current folder or "
                              "a folder that contains them.")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise FileInTheWay(f"{out_dir} exists and is not empty; pass overwrite=True (--overwrite) to replace it.")
    if not any((out_dir / marker).is_file() for marker in (SETTINGS_FILE, "config.json")):
        raise FileInTheWay(f"{out_dir} does not look like a converted plugin folder; refusing to replace it even "
                              "with --overwrite. Choose a new output folder.")


def _write_atomically(out_dir: Path, write: Callable[[Path], object], source: Path, overwrite: bool) -> None:
    """Write into a sibling temp folder, then move it into place, so a failure leaves nothing half-written."""
    _check_replaceable(out_dir, source, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        write(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def convert_official_plugin(task_dir: str | Path, out_dir: str | Path, task: str | None = None,
                            overwrite: bool = False) -> ConvertedItem:
    """Convert one official `pre-trained/<task>/` folder into a [`TaskPlugin`] folder at `out_dir`."""
    task_dir, out_dir = Path(task_dir), Path(out_dir)
    task = task or task_dir.name
    scb, ignored = read_scb(task_dir / "scb")
    tpb, stripped = read_tpb(task_dir / "tpb.pt")
    plugin = TaskPlugin(tpb, scb, PluginSettings.for_task(task))
    _write_atomically(out_dir, plugin.save_pretrained, task_dir, overwrite)
    tensors_tpb, params_tpb = _count(tpb)
    tensors_scb, params_scb = _count(scb)
    return ConvertedItem(kind="plugin", name=task, source=str(task_dir), output=str(out_dir),
                         tensors=tensors_tpb + tensors_scb, parameters=params_tpb + params_scb,
                         stripped_module_prefix=stripped, ignored_config_keys=ignored)


def convert_official_selector(path: str | Path, out_dir: str | Path, overwrite: bool = False) -> ConvertedItem:
    """Convert `PromptTunner.pt` (or the folder holding it) into a [`SelectorHeads`] folder at `out_dir`."""
    path, out_dir = Path(path), Path(out_dir)
    if path.is_dir():
        path = path / SELECTOR_FILE
    heads, stripped = read_selector(path)
    _write_atomically(out_dir, lambda d: heads.save_pretrained(d, safe_serialization=True), path, overwrite)
    tensors, params = _count(heads)
    return ConvertedItem(kind="selector", name=SELECTOR_FOLDER, source=str(path), output=str(out_dir),
                         tensors=tensors, parameters=params, stripped_module_prefix=stripped)


def convert_official(source: str | Path, out_dir: str | Path, task: str | None = None,
                     overwrite: bool = False) -> list[ConvertedItem]:
    """Convert whatever official source is given (see the module docstring).

    A task folder becomes a plugin folder at `out_dir`; a release folder becomes `out_dir/<task>/` for each
    task plus `out_dir/plugin_selector/`.
    """
    source, out_dir = Path(source), Path(out_dir)
    if not source.exists():
        raise ConversionError(f"{source}: no such file or folder.")
    if (source / SETTINGS_FILE).is_file():
        raise ConversionError(f"{source}: already a converted plugin folder ({SETTINGS_FILE}); use it as it is.")
    if source.is_file() or source.name == SELECTOR_FOLDER:
        return [convert_official_selector(source, out_dir, overwrite)]
    if _is_task_folder(source):
        return [convert_official_plugin(source, out_dir, task, overwrite)]
    items = [convert_official_plugin(sub, out_dir / sub.name, overwrite=overwrite)
             for sub in sorted(source.iterdir()) if sub.is_dir() and _is_task_folder(sub)]
    if (source / SELECTOR_FOLDER / SELECTOR_FILE).is_file():
        items.append(convert_official_selector(source / SELECTOR_FOLDER, out_dir / SELECTOR_FOLDER, overwrite))
    if not items:
        raise ConversionError(
            f"{source}: found no official plugin here. Expected a task folder (scb/ and tpb.pt), the "
            f"pre-trained/ folder that holds them, or {SELECTOR_FOLDER}/{SELECTOR_FILE}."
        )
    return items
