"""What the Hugging Face Hub needs of a pretrained folder: its model card, and repository ids.

``save_pretrained`` writes :func:`model_card` as the folder's ``README.md``: YAML metadata the Hub reads
(library, licence, tags) and a page saying what the model is, how it was configured, trained and scored
(when a :class:`TrainingRecord` is given) and how to load it. ``from_pretrained`` takes a Hub repository
id (``owner/name``) where no local path exists: :func:`download_pretrained` fetches the files of a
pretrained folder through ``huggingface_hub`` into its cache, or finds them there
(``HF_HUB_OFFLINE=1``, ``HF_HUB_CACHE``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from wavecl.config import ModelConfig
from wavecl.inference_settings import InferenceSettings
from wavecl.optional import require_package

if TYPE_CHECKING:
    from transformers import PretrainedConfig

MODEL_CARD_FILENAME = "README.md"
LICENSE = "mit"
"""The licence of wavecl's code, stated in every card; the weights also carry their training data's terms."""
REPOSITORY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
"""``owner/name`` as the Hub spells repository ids (no ``..``, no leading dot, one slash)."""


@dataclass
class TrainingRecord:
    """What a card says about the training run a model comes from.

    Attributes:
        dataset: ``data.dataset_name`` of the run.
        checkpoint: the checkpoint folder's name (``epoch_0005``).
        epochs_trained: epochs finished when the checkpoint was written; None when its folder name does not say.
        recipe: the run's training settings to show, ``{"train.lr": 1e-4, ...}``.
        run_info: the run's ``run_info.json`` (world size, precision, torch version, command), ``{}`` if absent.
        metrics: the evaluation of the checkpoint's epoch, ``{"J&F": 0.72, ...}`` (no counts); empty when none ran.
    """

    dataset: str
    checkpoint: str
    epochs_trained: int | None
    recipe: dict[str, Any] = field(default_factory=dict)
    run_info: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def is_repository_id(path: str) -> bool:
    """Whether ``path`` is spelt like a Hub repository id (``owner/name``); the caller checks first that it
    is not a local path."""
    return REPOSITORY_ID.fullmatch(path) is not None and ".." not in path


def download_pretrained(repository_id: str, files: list[str]) -> Path:
    """The local folder holding the pretrained files of a Hub repository, fetched into the Hugging Face
    cache unless already there (with ``HF_HUB_OFFLINE=1`` only the cache is read).

    Args:
        repository_id: ``owner/name``.
        files: glob patterns of the files to fetch (those a pretrained folder loads from), so that other
            files of the repository (ONNX exports) are not downloaded.

    Raises:
        MissingPackageError: ``huggingface_hub`` is not installed.
        FileNotFoundError: the repository, or its files in the cache when offline, cannot be found; the
            message names the id and the cause.
    """
    hub = require_package("huggingface_hub", f"loading the Hub repository {repository_id!r}")
    try:
        return Path(hub.snapshot_download(repository_id, allow_patterns=files))
    except (hub.errors.HfHubHTTPError, hub.errors.LocalEntryNotFoundError, OSError, ValueError) as error:
        raise FileNotFoundError(
            f"checkpoint not found: {repository_id} is no local path, and as a Hugging Face Hub repository: "
            f"{type(error).__name__}: {error}"
        ) from error


def _markdown_table(rows: list[tuple[str, str]]) -> list[str]:
    return ["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]


def _architecture_rows(
    config: ModelConfig, encoder: PretrainedConfig, parameters: tuple[int, int]
) -> list[tuple[str, str]]:
    backbone = config.backbone
    if config.backbone_embed_dim is not None:
        backbone += f" (reduced: width {config.backbone_embed_dim}, blocks {config.backbone_depths})"
    text = f"{encoder.model_type}, hidden size {encoder.hidden_size}, {encoder.num_hidden_layers} layers"
    return [
        ("visual backbone", backbone),
        ("text encoder", f"{text}{' (frozen in training)' if config.freeze_text_encoder else ''}"),
        ("transformer", f"width {config.d_model}, {config.enc_layers} + {config.dec_layers} deformable layers"),
        ("object queries", str(config.num_queries)),
        ("classes", str(config.num_classes)),
        ("parameters", f"{parameters[0]:,} ({parameters[1]:,} trainable)"),
    ]


def _training_lines(training: TrainingRecord | None) -> list[str]:
    if training is None:
        return ["Not recorded: this folder was saved from a model in memory, not exported from a training run."]
    info = training.run_info
    rows = [
        ("data.dataset_name", f"`{training.dataset}`"),
        ("checkpoint", f"`{training.checkpoint}`"),
        *([("epochs trained", str(training.epochs_trained))] if training.epochs_trained is not None else []),
        *((name, f"`{value}`") for name, value in training.recipe.items()),
    ]
    if "world_size" in info:
        rows.append(("processes", str(info["world_size"])))
    if isinstance(info.get("precision"), dict) and "effective" in info["precision"]:
        rows.append(("precision", str(info["precision"]["effective"])))
    if info.get("torch"):
        rows.append(("torch", str(info["torch"])))
    if info.get("git_revision"):
        rows.append(("wavecl revision", f"`{info['git_revision']}`"))
    lines = _markdown_table(rows)
    if training.metrics:
        lines += ["", f"Scores on the held-out split of `{training.dataset}` logged for this checkpoint's epoch:"]
        lines += ["", "| metric | value |", "|---|---:|"]
        lines += [f"| {name} | {value:.4f} |" for name, value in training.metrics.items()]
    return lines


def model_card(
    config: ModelConfig,
    text_encoder: PretrainedConfig,
    parameters: tuple[int, int],
    settings: InferenceSettings,
    training: TrainingRecord | None = None,
) -> str:
    """The ``README.md`` of a pretrained folder.

    Args:
        config: the network saved beside the card.
        text_encoder: its text encoder's Hugging Face configuration.
        parameters: ``(total, trainable)`` parameter counts (:func:`wavecl.model.parameters.count_parameters`).
        settings: the resize and window recorded with it (``preprocessor_config.json``).
        training: the run it comes from; ``None``: the card says training was not recorded.

    Returns:
        Markdown with a YAML front matter (``library_name``, ``license``, ``tags``).
    """
    tags = ["wavecl", "referring-video-object-segmentation", "video-object-segmentation", "pytorch"]
    front = ["---", "library_name: wavecl", f"license: {LICENSE}", "tags:", *(f"- {tag}" for tag in tags), "---"]
    runs_at = (
        f"short side {settings.short_size} px, long side at most {settings.max_size or 'unbounded'} px, "
        f"{settings.window} frames per clip"
    )
    config_yaml = yaml.safe_dump({"model": dataclasses.asdict(config)}, sort_keys=False, default_flow_style=None)
    lines = [
        *front,
        "",
        "# WaveCL",
        "",
        "WaveCL (Wavelet Calibration Learning) segments, in every frame of a video, the object a sentence",
        "refers to. This folder was written by [wavecl](https://pypi.org/project/wavecl/)'s `save_pretrained`:",
        "`config.json` (the network), `model.safetensors` (every weight), `text_encoder/` (the text encoder's",
        "configuration and tokenizer) and, when recorded, `preprocessor_config.json` (the frame size and",
        "window the model runs at).",
        "",
        "## Architecture",
        "",
        *_markdown_table(_architecture_rows(config, text_encoder, parameters)),
        "",
        f"Inference: {runs_at}.",
        "",
        "## Training",
        "",
        *_training_lines(training),
        "",
        "## How to use",
        "",
        "```python",
        "from wavecl import VideoPredictor, WaveCL",
        "",
        'model = WaveCL.from_pretrained("OWNER/NAME")  # a Hub repository id, or this folder\'s path',
        "predictor = VideoPredictor(model)",
        'masks = predictor("video.mp4", ["the dog on the left"])  # bool [sentences, frames, height, width]',
        "```",
        "",
        'or `wavecl predict video.mp4 --checkpoint PATH --text "the dog on the left"` with a local copy.',
        "",
        "## Configuration",
        "",
        "The network as a wavecl config section (`config.json` holds the same values):",
        "",
        "```yaml",
        config_yaml.rstrip(),
        "```",
        "",
        "## Licence",
        "",
        f"wavecl's code is under the {LICENSE.upper()} licence. Weights trained on a dataset also fall under",
        "that dataset's terms of use.",
        "",
    ]
    return "\n".join(lines)
