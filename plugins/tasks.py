"""The task catalogue: every task id the project itself knows, in words a user would use.

A task id (`dehaze`, `white-balance`, ...) is what a plugin's manifest names under `tasks:`. Installed plugins may
name tasks that are not here; those are served by their own manifest's name and description. Everything that
needs to say what a known task is or does (the LLM planner's prompt, the order policy's "restoration before
adjustments", the detector's uncovered findings, the chat's wording, `models pull`) reads it from here, so the
list exists once. Tables that hold per-task numbers or reasons (the detector's statistics, the quality check's
exemptions, Diff-Plugin's start modes) stay beside the code that uses them, keyed by these ids
(tests/test_task_catalogue.py checks that they name only catalogue tasks).

    >>> from plugins.tasks import TASKS
    >>> TASKS["dehaze"].fixes
    'haze, fog, mist or smog that makes the photo look grey and washed out'
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ADJUSTMENTS", "OFFICIAL", "RESTORATION", "TASKS", "UNSERVED", "Task", "describe"]


@dataclass(frozen=True)
class Task:
    """One task: its id, a name, what it fixes in one line, everyday words for it, and its kind."""

    id: str
    name: str
    #: What the task fixes or changes, in one line that completes "it removes / changes ...".
    fixes: str
    #: Everyday words people use for the problem or the edit (the selector learns its own; these are for prompts
    #: and descriptions).
    synonyms: tuple[str, ...]
    #: A restoration undoes a degradation (rain, blur, noise, ...); anything else is an adjustment (exposure,
    #: crop, ...), which runs after every restoration.
    restoration: bool
    #: The official Diff-Plugin release (CVPR 2024) has weights for it (`diffplugin models pull`).
    official: bool = False
    #: What a photo that needs the task shows, as the chat names it ("haze"); empty: named by its id.
    seen: str = ""
    #: The edit as the chat offers it ("remove the haze"); empty: "run <id>".
    offer: str = ""
    #: A built-in plugin performs it. False for a degradation the detector reports that only an installed plugin
    #: could remove (JPEG blocks): the planner says so and suggests plugins from the registry's search.
    served: bool = True


_CATALOGUE = (
    Task("derain", "Rain removal", "rain streaks and drops over the photo",
         ("rain", "rain streaks", "drizzle", "downpour", "raindrops", "streaky lines"), restoration=True,
         official=True, seen="rain", offer="remove the rain"),
    Task("desnow", "Snow removal", "falling snowflakes and white specks in front of the scene",
         ("snow", "snowflakes", "flakes", "white specks", "blizzard", "flurries"), restoration=True, official=True,
         seen="snow", offer="remove the snow"),
    Task("dehaze", "Haze removal", "haze, fog, mist or smog that makes the photo look grey and washed out",
         ("haze", "fog", "mist", "smog", "murky", "washed out", "hazy"), restoration=True, official=True,
         seen="haze", offer="remove the haze"),
    Task("deblur", "Deblurring", "blur from a shaky hand, motion or soft focus",
         ("blur", "blurry", "out of focus", "shaky", "smeared", "soft", "not sharp"), restoration=True,
         official=True, seen="blur", offer="sharpen it"),
    Task("demoire", "Moire removal", "moire ripples, stripes and grid patterns from photographing a screen or print",
         ("moire", "wavy lines", "stripes from a screen", "halftone pattern", "screen-door pattern", "bands"),
         restoration=True, official=True, seen="moire patterns", offer="remove the moire"),
    Task("highlight", "Highlight removal", "shiny glare, reflections and blown-out hot spots on glossy surfaces",
         ("glare", "shine", "shiny spots", "reflections", "hot spots", "sheen"), restoration=True, official=True,
         seen="glare", offer="tone down the glare"),
    Task("lowlight", "Low-light enhancement", "a photo that is too dark: underexposed, dim, or a night shot",
         ("too dark", "dim", "underexposed", "night shot", "brighten", "lift the shadows", "gloomy"),
         restoration=True, official=True, seen="low light", offer="brighten it"),
    Task("face", "Face restoration", "blurred, noisy or low-resolution faces",
         ("faces", "portrait", "features", "blurry face", "old photo of a person"), restoration=True, official=True,
         seen="a degraded face", offer="restore the face"),
    Task("denoise", "Noise reduction", "grain and colour speckle from a high ISO or a small sensor",
         ("noise", "grain", "grainy", "speckles", "dots", "high ISO", "sandy"), restoration=True,
         seen="noise", offer="remove the noise"),
    Task("jpeg", "JPEG artifact removal", "JPEG compression artifacts and blocking",
         ("jpeg artifacts", "compression artifacts", "blocky", "8x8 blocks", "low quality jpeg", "ringing"),
         restoration=True, seen="JPEG compression blocks", offer="remove the JPEG blocks", served=False),
    Task("contrast", "Contrast", "how flat or harsh the tones are",
         ("flat", "dull", "punch", "lifeless", "harsh", "deeper blacks"), restoration=False,
         seen="flat contrast", offer="add contrast"),
    Task("crop", "Crop", "the framing: cuts off edges or trims to an aspect ratio",
         ("trim", "cut off the edges", "aspect ratio", "square", "16:9", "tighter framing"), restoration=False),
    Task("exposure", "Exposure", "the overall exposure, by a number of stops (EV)",
         ("EV", "stops", "overexposed", "brighter by a stop", "darker"), restoration=False,
         seen="a badly exposed photo", offer="correct the exposure"),
    Task("resize", "Resize", "the size in pixels",
         ("smaller", "bigger", "scale", "resolution", "downscale", "shrink"), restoration=False),
    Task("rotate", "Rotate", "the orientation: sideways, upside down or tilted photos",
         ("sideways", "upside down", "turn", "straighten", "tilted", "orientation"), restoration=False),
    Task("saturation", "Saturation", "how vivid the colours are, down to black and white",
         ("vivid", "vibrant", "colours pop", "muted", "black and white", "grayscale"), restoration=False,
         seen="dull colours", offer="make the colours more vivid"),
    Task("white-balance", "White balance", "a colour cast: too yellow, too blue, a green or orange tint",
         ("colour cast", "too yellow", "too blue", "tint", "neutral colours", "auto white balance"),
         restoration=False, seen="a colour cast", offer="fix the white balance"),
)

#: Every task the project knows, by id, in the order above (the Diff-Plugin tasks first).
TASKS: dict[str, Task] = {task.id: task for task in _CATALOGUE}
#: Tasks that undo a degradation.
RESTORATION: tuple[str, ...] = tuple(t.id for t in _CATALOGUE if t.restoration)
#: Tasks that change the look or geometry of a clean photo.
ADJUSTMENTS: tuple[str, ...] = tuple(t.id for t in _CATALOGUE if not t.restoration)
#: Tasks the official Diff-Plugin release has weights for.
OFFICIAL: tuple[str, ...] = tuple(t.id for t in _CATALOGUE if t.official)
#: Degradations no built-in plugin removes (the detector reports them as uncovered).
UNSERVED: tuple[str, ...] = tuple(t.id for t in _CATALOGUE if not t.served)


def describe(task_id: str) -> str:
    """'dehaze (haze removal: haze, fog, mist ...)' for a known task, the bare id for any other."""
    task = TASKS.get(task_id)
    return f"{task_id} ({task.name.lower()}: {task.fixes})" if task else task_id
