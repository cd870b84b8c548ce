"""One readable PNG of an explanation's tiles: upsampled, each titled, with a colour bar.

Overlays are made at the model's input resolution (28 to 224 px), far too small to read once
three or five of them sit side by side. :func:`render_panel` scales every tile to one side of
at least :data:`MIN_TILE_SIDE` px (or the source image's longer side, up to
:data:`MAX_TILE_SIDE`), nearest-neighbour, so each model pixel stays a visible block rather than
a smoothed guess at detail the model never saw. A title band above each tile says what it is
(clean or attacked, which map, model, class, probability, ε) and a colour bar gives the
heatmap's scale.

Drawn text is ASCII (OpenCV's Hershey fonts have no ε or accents), so the same titles, in full
Unicode, and each tile's box go into the PNG as an ``iTXt`` chunk (keyword :data:`PNG_KEY`, JSON):
a program (or a test) can read what the panel shows and where, without OCR.
"""

from __future__ import annotations

import json
import struct
import unicodedata
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from training.explain.overlay import png_bytes

MIN_TILE_SIDE = 512
MAX_TILE_SIDE = 1024  # a 4000-px radiograph would make a 20k-px panel otherwise
PNG_KEY = "medrobust:panel"
BACKGROUND = 255  # white
INK = (20, 20, 20)  # RGB
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class Tile:
    """One square RGB image ``(S, S, 3)`` uint8 and its title, one string per line."""

    key: str
    title: tuple[str, ...]
    rgb: np.ndarray


def tile_side(source_shape: tuple[int, ...] | None) -> int:
    """The side tiles are drawn at: the source image's longer side, clamped to
    [:data:`MIN_TILE_SIDE`, :data:`MAX_TILE_SIDE`]."""
    longest = max(source_shape[:2]) if source_shape else 0
    return int(min(max(longest, MIN_TILE_SIDE), MAX_TILE_SIDE))


def render_panel(
    tiles: Sequence[Tile], side: int, colormap: int = cv2.COLORMAP_JET, scale_label: str = "map"
) -> bytes:
    """The tiles side by side at ``side`` px, titled, with a colour bar for ``colormap`` (the
    one the overlays were drawn with) labelled ``scale_label``; PNG bytes with the layout in
    an ``iTXt`` chunk."""
    if not tiles:
        raise ValueError("a panel needs at least one tile")
    font_scale = side / 800
    thickness = max(1, round(side / 400))
    (_, text_height), baseline = cv2.getTextSize("Ag", _FONT, font_scale, thickness)
    line = text_height + baseline + max(4, side // 64)
    margin = max(8, side // 32)
    lines = max(len(tile.title) for tile in tiles)
    band = lines * line + margin // 2
    bar_width = max(12, side // 16)
    label_width = max(
        cv2.getTextSize(text, _FONT, font_scale, thickness)[0][0] for text in ("high", "low")
    )
    label_width = max(label_width, text_height + baseline + 2)  # the rotated scale label
    width = margin + len(tiles) * (side + margin) + bar_width + margin // 2 + label_width + margin
    height = margin + band + side + margin
    canvas = np.full((height, width, 3), BACKGROUND, np.uint8)

    layout = []
    top = margin + band
    for index, tile in enumerate(tiles):
        left = margin + index * (side + margin)
        canvas[top : top + side, left : left + side] = _scaled(tile, side)
        for row, text in enumerate(tile.title):
            drawn = _fit(_ascii(text), side, font_scale, thickness)
            origin = (left, margin + row * line + text_height)
            cv2.putText(canvas, drawn, origin, _FONT, font_scale, INK, thickness, cv2.LINE_AA)
        layout.append(
            {
                "key": tile.key,
                "title": list(tile.title),
                "box": [left, top, side, side],
                "title_box": [left, margin, side, band],
            }
        )

    bar_left = margin + len(tiles) * (side + margin)
    ramp = np.linspace(255, 0, side).round().astype(np.uint8)[:, None]  # high at the top
    bar = cv2.applyColorMap(np.repeat(ramp, bar_width, axis=1), colormap)
    canvas[top : top + side, bar_left : bar_left + bar_width] = cv2.cvtColor(bar, cv2.COLOR_BGR2RGB)
    text_left = bar_left + bar_width + margin // 2
    for text, y in (("high", top + text_height), ("low", top + side)):
        cv2.putText(canvas, text, (text_left, y), _FONT, font_scale, INK, thickness, cv2.LINE_AA)
    label_box = (text_left, top + line, side - 2 * line)
    _vertical_label(canvas, _ascii(scale_label), label_box, font_scale, thickness)

    metadata = {
        "tiles": layout,
        "colorbar": {"box": [bar_left, top, bar_width, side], "low": 0.0, "high": 1.0},
        "label": scale_label,
    }
    return with_itxt(png_bytes(canvas), PNG_KEY, json.dumps(metadata, ensure_ascii=False))


def with_itxt(png: bytes, keyword: str, text: str) -> bytes:
    """``png`` with an uncompressed ``iTXt`` chunk (UTF-8 ``text``) right after its IHDR."""
    signature_and_ihdr = 8 + 4 + 4 + 13 + 4
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG starting with its IHDR chunk")
    payload = keyword.encode("latin-1") + b"\x00\x00\x00" + b"\x00\x00" + text.encode("utf-8")
    kind = b"iTXt"
    chunk = struct.pack(">I", len(payload)) + kind + payload
    chunk += struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    return png[:signature_and_ihdr] + chunk + png[signature_and_ihdr:]


def _scaled(tile: Tile, side: int) -> np.ndarray:
    rgb = np.asarray(tile.rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"tile {tile.key!r} must be (H, W, 3) uint8, got {rgb.dtype} {rgb.shape}")
    return cv2.resize(rgb, (side, side), interpolation=cv2.INTER_NEAREST)


def _ascii(text: str) -> str:
    """``text`` as OpenCV can draw it: ε spelt out, accents dropped, anything else '?'."""
    text = text.replace("ε", "eps").replace("∞", "inf").replace("σ", "sigma").replace("·", "|")
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(c for c in decomposed if not unicodedata.combining(c))
    return kept.encode("ascii", "replace").decode("ascii")


def _fit(text: str, width: int, font_scale: float, thickness: int) -> str:
    """``text`` cut (with "...") to fit ``width`` px, so a long class name stays in its tile."""
    if cv2.getTextSize(text, _FONT, font_scale, thickness)[0][0] <= width:
        return text
    while text and cv2.getTextSize(text + "...", _FONT, font_scale, thickness)[0][0] > width:
        text = text[:-1]
    return text + "..."


def _vertical_label(
    canvas: np.ndarray, text: str, box: tuple[int, int, int], font_scale: float, thickness: int
) -> None:
    """``text`` written bottom-to-top in ``box`` (left, top, height), centred on its height."""
    left, top, height = box
    (_, text_height), baseline = cv2.getTextSize(text, _FONT, font_scale, thickness)
    text = _fit(text, height, font_scale, thickness)
    text_width = cv2.getTextSize(text, _FONT, font_scale, thickness)[0][0]
    strip = np.full((text_height + baseline + 2, height, 3), BACKGROUND, np.uint8)
    origin = ((height - text_width) // 2, text_height)
    cv2.putText(strip, text, origin, _FONT, font_scale, INK, thickness, cv2.LINE_AA)
    rotated = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    canvas[top : top + height, left : left + rotated.shape[1]] = rotated
