"""The pictures ``wavecl predict`` writes read at a glance: colours that contrast with the objects, text
off the frames, a legend in the video, tiles large enough. Checked on controlled masks (a stand-in
predictor that returns the objects' true masks) against computations made here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from wavecl.data.synthetic import COLOURS
from wavecl.data.video_files import read_video_frames
from wavecl.inference.overlay import sentence_colors
from wavecl.inference.prediction_folder import write_predictions
from wavecl.inference_settings import InferenceSettings

HEIGHT, WIDTH, NUM_FRAMES = 48, 64, 10
SENTENCES = ["the yellow triangle", "the blue square"]
MIN_DISTANCE = 100.0
"""Least RGB (Euclidean, 0-255) distance wanted between a sentence's colour and an object's colour."""


def clip() -> tuple[np.ndarray, np.ndarray]:
    """``[T, H, W, 3]`` frames, each on a background colour of its own that no text or mask uses (so its
    tile can be found in a contact sheet), with a yellow triangle and a blue square in the lower part;
    ``[2, T, H, W]`` their masks."""
    rows, columns = np.mgrid[:HEIGHT, :WIDTH]
    frames = np.empty((NUM_FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)
    masks = np.zeros((2, NUM_FRAMES, HEIGHT, WIDTH), dtype=bool)
    for t in range(NUM_FRAMES):
        left = 4 + 2 * t
        masks[0, t] = (rows >= 24) & (rows < 44) & (np.abs(columns - left - 10) <= (rows - 24) / 2)
        masks[1, t] = (rows >= 26) & (rows < 42) & (columns >= 44 - t) & (columns < 60 - t)
        frames[t] = (90, 40 + t, 150)
        frames[t][masks[0, t]] = COLOURS["yellow"]
        frames[t][masks[1, t]] = COLOURS["blue"]
    return frames, masks


class TrueMasks:
    """Stands in for :class:`~wavecl.inference.predictor.VideoPredictor`: yields the given masks."""

    settings = InferenceSettings(window=4)

    def __init__(self, masks: np.ndarray) -> None:
        self.masks = masks

    def check_sentences(self, sentences, names=None) -> list[str]:
        return list(sentences)

    def predict_stream(self, video: np.ndarray, sentences):
        for index, frame in enumerate(video):
            yield index, Image.fromarray(frame), torch.from_numpy(self.masks[:, index])


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory):
    frames, masks = clip()
    paths = write_predictions(TrueMasks(masks), frames, SENTENCES, tmp_path_factory.mktemp("predicted"), fps=8)
    return frames, masks, paths


def test_colours_contrast_with_every_object_and_differ() -> None:
    greys = [(value, value, value) for value in (0, 128, 255)]
    for color in [*COLOURS.values(), *greys, *map(tuple, sentence_colors(12))]:
        chosen = sentence_colors(1, np.array([color], dtype=float))[0].astype(float)
        assert np.linalg.norm(chosen - color) >= MIN_DISTANCE, f"{chosen} on an object of colour {color}"
    objects = np.array([COLOURS["yellow"], COLOURS["blue"]], dtype=float)
    pair = sentence_colors(2, objects).astype(float)
    distances = np.linalg.norm(pair[:, None] - objects[None], axis=-1)
    assert (distances >= MIN_DISTANCE).all(), "neither sentence is drawn in either object's colour"
    assert np.linalg.norm(pair[0] - pair[1]) >= MIN_DISTANCE
    unknown = sentence_colors(8)
    assert len({tuple(color) for color in unknown}) == 8, "without objects, eight sentences get eight colours"
    assert (sentence_colors(2, objects) == pair).all(), "deterministic"


def test_predict_colours_contrast_with_the_masked_objects(written) -> None:
    frames, masks, paths = written
    for sentence in range(2):
        mean = frames[masks[sentence]].astype(float).mean(axis=0)  # the object's own colour
        for other in range(2):
            assert np.linalg.norm(paths.colors[other].astype(float) - mean) >= MIN_DISTANCE


def test_overlay_video_is_enlarged_and_carries_a_legend_under_the_picture(written) -> None:
    frames, _, paths = written
    decoded = np.stack([np.asarray(image) for image in read_video_frames(paths.overlay_video)]).astype(int)
    factor = 480 // WIDTH
    assert decoded.shape[0] == NUM_FRAMES and decoded.shape[2] == factor * WIDTH >= 400
    picture, band = decoded[:, : factor * HEIGHT], decoded[:, factor * HEIGHT :]
    background = frames[:, :20].repeat(factor, axis=1).repeat(factor, axis=2).astype(int)  # no mask up there
    assert np.abs(picture[:, : 20 * factor] - background).mean() < 4, "the picture is the enlarged frame"
    assert band.shape[1] >= 2 * 14, "room for one legend line per sentence"
    for frame in band:
        for color in paths.colors:
            near = (np.abs(frame - color.astype(int)) <= 40).all(axis=-1)
            assert near.sum() >= 10 * 10, f"a swatch of {color} in every frame's legend"
        assert ((frame > 180).all(axis=-1)).sum() >= 50, "legend text in every frame"


def test_contact_sheet_tiles_are_large_and_captions_stay_off_them(written) -> None:
    frames, _, paths = written
    sheet = np.asarray(Image.open(paths.contact_sheet)).astype(int)
    factor = 320 // WIDTH
    assert sheet.shape[1] >= 4 * factor * WIDTH >= 1000 and sheet.shape[0] >= 2 * factor * HEIGHT
    tile_height, tile_width = factor * HEIGHT, factor * WIDTH
    for name in paths.sheet_frames:
        t = int(name)
        background = frames[t, 0, 0].astype(int)
        found = np.argwhere((sheet == background).all(axis=-1))
        assert len(found), f"frame {name} is in the sheet"
        (y0, x0), (y1, x1) = found.min(axis=0), found.max(axis=0)
        assert (y1 - y0 + 1, x1 - x0 + 1) == (tile_height, tile_width), f"frame {name}'s tile, enlarged"
        top = sheet[y0 : y0 + 20 * factor, x0 : x1 + 1]
        assert (top == background).all(), f"nothing is written over the top of frame {name}'s tile"
        caption = sheet[max(0, y0 - 24) : y0, x0 : x1 + 1]
        assert ((caption > 180).all(axis=-1)).sum() >= 20, f"frame {name}'s caption is written above its tile"


def test_page_legend_shows_the_colours_of_the_pictures(written) -> None:
    from wavecl.app.results import legend_html

    _, _, paths = written
    legend = legend_html(SENTENCES, paths.colors)
    sheet = np.asarray(Image.open(paths.contact_sheet))
    for index, (sentence, (red, green, blue)) in enumerate(zip(SENTENCES, paths.colors)):
        assert f"rgb({red},{green},{blue})" in legend and f"{index}: {sentence}" in legend
        assert (sheet == (red, green, blue)).all(axis=-1).sum() >= 12 * 12, "the same colour in the sheet's legend"


def test_small_frames_are_enlarged_in_whole_blocks_large_ones_keep_their_size_in_the_video() -> None:
    from wavecl.inference.overlay import paint, sheet_tile

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    no_mask = np.zeros((1, 30, 40), dtype=bool)
    color = np.array([[255, 0, 0]], dtype=np.uint8)
    assert (paint(small, no_mask, color, 480) == small.repeat(12, axis=0).repeat(12, axis=1)).all()
    assert (sheet_tile(small, no_mask, color) == small.repeat(8, axis=0).repeat(8, axis=1)).all()
    large = rng.integers(0, 256, (500, 700, 3), dtype=np.uint8)
    assert paint(large, np.zeros((1, 500, 700), dtype=bool), color, 480).shape == (500, 700, 3)
    assert sheet_tile(large, np.zeros((1, 500, 700), dtype=bool), color).shape == (229, 320, 3)
