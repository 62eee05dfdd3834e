"""Contact sheets: one row per image, degraded | output | clean, with the figures written under each tile."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

TILE_HEIGHT = 192
CAPTION = 18
GAP = 6


@dataclass(frozen=True)
class SheetRow:
    title: str
    tiles: Sequence[tuple[PIL.Image.Image, str]]  # (image, caption), left to right


def contact_sheet(rows: Sequence[SheetRow], tile_height: int = TILE_HEIGHT) -> PIL.Image.Image:
    """Tiles scaled to one height; each row titled on the left of its first caption line."""
    if not rows:
        raise ValueError("a contact sheet needs at least one row")
    font = PIL.ImageFont.load_default()
    scaled = [[(_fit(image, tile_height), caption) for image, caption in row.tiles] for row in rows]
    width = max(sum(t.width for t, _ in tiles) + GAP * (len(tiles) + 1) for tiles in scaled)
    row_height = CAPTION + tile_height + CAPTION + GAP
    sheet = PIL.Image.new("RGB", (width, row_height * len(rows) + GAP), "white")
    draw = PIL.ImageDraw.Draw(sheet)
    for index, (row, tiles) in enumerate(zip(rows, scaled, strict=True)):
        top = GAP + index * row_height
        draw.text((GAP, top + 2), row.title, fill="black", font=font)
        left = GAP
        for tile, caption in tiles:
            sheet.paste(tile, (left, top + CAPTION))
            draw.text((left, top + CAPTION + tile_height + 3), caption, fill="black", font=font)
            left += tile.width + GAP
    return sheet


def _fit(image: PIL.Image.Image, height: int) -> PIL.Image.Image:
    width = max(1, round(image.width * height / image.height))
    return image.convert("RGB").resize((width, height), PIL.Image.Resampling.LANCZOS)
