"""Contact sheets: a PNG grid of thumbnails in labelled rows, for people to judge at a glance."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw

Row = tuple[str, Sequence[Image.Image]]  # (label, images)


def contact_sheet(rows: Sequence[Row], thumb: int = 96, per_row: int = 8, label_height: int = 14) -> bytes:
    """Rows of up to ``per_row`` thumbnails, each row under its label; returns PNG bytes."""
    pad = 4
    width = pad + per_row * (thumb + pad)
    height = pad + max(len(rows), 1) * (label_height + thumb + pad)
    sheet = Image.new("RGB", (width, height), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    y = pad
    for label, images in rows:
        draw.text((pad, y), label[: width // 6], fill=(230, 230, 230))
        y += label_height
        for i, image in enumerate(list(images)[:per_row]):
            tile = image.copy()
            tile.thumbnail((thumb, thumb))
            sheet.paste(tile, (pad + i * (thumb + pad), y))
        y += thumb + pad
    if not rows:
        draw.text((pad, pad), "nothing to show", fill=(230, 230, 230))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def thumbnail_png(png: bytes, max_side: int = 480) -> bytes:
    """A smaller copy for inline metadata (kept well under 1 MB)."""
    image = Image.open(io.BytesIO(png))
    image.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    image.convert("P", palette=Image.Palette.ADAPTIVE).save(buf, format="PNG", optimize=True)
    return buf.getvalue()
