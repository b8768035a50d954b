"""Rows of text in a dark box over a picture, sized to stay legible and inside the image: the legend and
captions of ``tools/image_demo.py`` (``boat_mm.apis.inference.render``)."""
from typing import List, Optional

import numpy as np

__all__ = ['TEXT_HEIGHT_FRACTION', 'MIN_TEXT_PX', 'POINTS_PER_INCH', 'font_points', 'fit_text_px', 'draw_panel']

# Text drawn over the image: height a fraction of the shorter side, never below a legible minimum.
TEXT_HEIGHT_FRACTION = 1 / 32
MIN_TEXT_PX = 10
LINE_SPACING = 1.5  # row height / text height
MONOSPACE_ADVANCE = 0.6  # character width / text height of DejaVu Sans Mono, the monospace font matplotlib ships
PANEL_ALPHA = 0.65  # opacity of the dark box behind the text
POINTS_PER_INCH = 72  # matplotlib font sizes are in points


def font_points(visualizer, px: float) -> float:
    """matplotlib font size (points) of text ``px`` pixels high on the visualizer's canvas."""
    return px * POINTS_PER_INCH / visualizer.dpi


def fit_text_px(image: np.ndarray, chars: int, px: float, margin: float = 0) -> float:
    """A text height near ``px`` (never above) at which ``chars`` monospace characters plus ``margin`` pixels
    fit the image width. Agg hints the glyph advance to whole pixels, so the height is picked to make the
    advance a whole number of pixels: then the width of the text is known exactly."""
    advance = min(int(px * MONOSPACE_ADVANCE), int((image.shape[1] - margin) / chars))
    return max(1, advance) / MONOSPACE_ADVANCE


def draw_panel(visualizer, rows: List[str], corner: str, swatches=None, color='white',
               max_rows: Optional[int] = None) -> None:
    """Rows of text in a dark box in a ``corner`` ('top-right', 'bottom-left'...) of the visualizer's image,
    each row led by a colour swatch when ``swatches`` are given. The text shrinks to fit the width, and rows
    beyond ``max_rows`` (this one included) or the image height are summed up in a last "+N more" row."""
    image = visualizer.get_image()
    height, width = image.shape[:2]
    px = max(MIN_TEXT_PX, round(min(height, width) * TEXT_HEIGHT_FRACTION))
    swatch = px if swatches else 0
    px = fit_text_px(image, max(len(row) for row in rows), px, margin=3 * px + swatch)
    row_h = px * LINE_SPACING
    pad = px / 2
    fits = max(1, min(int((height - 2 * pad) // row_h), max_rows or len(rows)))
    if len(rows) > fits:
        rows, swatches = rows[:fits - 1] + [f'+{len(rows) - fits + 1} more'], (swatches or [])[:fits - 1]
    box_w = 2 * pad + (swatch + pad if swatch else 0) + max(len(r) for r in rows) * MONOSPACE_ADVANCE * px
    box_h = 2 * pad + len(rows) * row_h
    right, bottom = width - 1, height - 1  # last pixel column and row (mmengine warns beyond them)
    x0 = right - box_w if 'right' in corner else 0
    y0 = bottom - box_h if 'bottom' in corner else 0
    visualizer.draw_bboxes(np.array([x0, y0, x0 + box_w, y0 + box_h]), edge_colors='black', face_colors='black',
                           alpha=PANEL_ALPHA, line_widths=0)
    centres = y0 + pad + row_h * (np.arange(len(rows)) + 0.5)
    for colour, y in zip(swatches or [], centres):
        visualizer.draw_bboxes(np.array([x0 + pad, y - swatch / 2, x0 + pad + swatch, y + swatch / 2]),
                               edge_colors='white', face_colors=colour, alpha=1.0, line_widths=1)
    text_x = x0 + pad + (swatch + pad if swatch else 0)
    visualizer.draw_texts(rows, np.stack([np.full(len(rows), text_x), centres], axis=1), colors=color,
                          font_sizes=font_points(visualizer, px), vertical_alignments='center',
                          font_families='monospace')
