"""What the page shows after a request: the masks zip, the colour legend and a one-line summary."""

from __future__ import annotations

import html
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class SegmentResult:
    """What one request produced, as shown on the page.

    Attributes:
        overlay_video: the mp4 with every sentence's mask blended in its colour; ``None`` without PyAV.
        contact_sheet: the contact-sheet PNG.
        legend: HTML listing each sentence beside its colour.
        masks_zip: the zip of per-frame mask PNGs.
        summary: one line of Markdown (frames, sentences, seconds).
    """

    overlay_video: Path | None
    contact_sheet: Path
    legend: str
    masks_zip: Path
    summary: str

    def as_outputs(self) -> tuple[str | None, str, str, str, str]:
        """The values of the page's output components, in their order."""
        video = None if self.overlay_video is None else str(self.overlay_video)
        return video, str(self.contact_sheet), self.legend, str(self.masks_zip), self.summary


def mask_archive_name(mask_file: Path, masks_root: Path) -> str:
    """Name of a mask PNG inside the download zip: its path under the ``masks/`` folder that
    :func:`wavecl.inference.prediction_folder.write_predictions` wrote (``<i>_<sentence>/<frame>.png``)."""
    return mask_file.relative_to(masks_root).as_posix()


def zip_masks(masks_root: Path, archive: Path) -> Path:
    """Store every mask PNG under ``masks_root`` in ``archive`` (uncompressed: PNGs are compressed).

    Returns:
        ``archive``.
    """
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as bundle:
        for mask_file in sorted(masks_root.rglob("*.png")):
            bundle.write(mask_file, mask_archive_name(mask_file, masks_root))
    return archive


def legend_html(sentences: Sequence[str], colors: np.ndarray) -> str:
    """HTML listing ``i: sentence`` beside its colour (``[N, 3]`` uint8 RGB ``colors``, those of the
    overlay and contact sheet)."""
    items = []
    for index, (sentence, color) in enumerate(zip(sentences, colors)):
        red, green, blue = (int(c) for c in color)
        items.append(
            f'<li style="list-style:none;margin:0.2em 0"><span style="display:inline-block;width:1em;'
            f"height:1em;margin-right:0.5em;vertical-align:middle;border:1px solid #0004;"
            f'background:rgb({red},{green},{blue})"></span>{index}: {html.escape(sentence)}</li>'
        )
    return f'<ul class="wavecl-legend" style="padding:0;margin:0">{"".join(items)}</ul>'


def summary_line(num_frames: int, num_sentences: int, seconds: float) -> str:
    """``"12 frames × 2 sentences segmented in 3.4 s."``"""
    plural = "s" if num_sentences > 1 else ""
    return f"{num_frames} frames × {num_sentences} sentence{plural} segmented in {seconds:.1f} s."
