"""Self-contained pretrained folders: ``save_pretrained`` / ``load_pretrained`` (docs/architecture.md).

A pretrained folder loads offline, with no other file and no network::

    <directory>/
        config.json                 the ModelConfig as JSON
        model.safetensors           every weight once (text encoder included)
        preprocessor_config.json    {"short_size", "max_size", "window"} the model runs at (recorded inference
                                    settings, wavecl.inference_settings); without it, the defaults
        text_encoder/               the Hugging Face encoder's config.json and tokenizer files (no weights)
        README.md                   the model card (:func:`wavecl.model.hub.model_card`)

Weights are read by :func:`wavecl.model.weights.load_weights`, the loader of every other path too.

:meth:`PretrainedMixin.from_pretrained` also accepts what a training run writes (:mod:`wavecl.checkpoint`): a
run directory (its ``checkpoints/last`` checkpoint, or the newest epoch folder when that pointer is
missing), a checkpoint folder or pointer, or a ``model.safetensors`` file inside one. The network is
then described by ``<run>/config.yaml`` and the text encoder is built from ``model.text_encoder``; the
model runs at the run's ``data.eval_short_size`` / ``eval_max_size`` and ``data.window_size``.

A loaded model remembers those settings as ``model.inference_settings``, which ``save_pretrained`` writes. Where
no local path exists, an ``owner/name`` is a Hugging Face Hub repository holding a pretrained folder
(:func:`wavecl.model.hub.download_pretrained`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch
import transformers
from safetensors.torch import save_file
from torch import nn

if TYPE_CHECKING:
    from typing_extensions import Self

from wavecl.atomic import atomic_path, replace_directory, temporary_directory
from wavecl.checkpoint import MODEL_FILENAME, latest_checkpoint, unshared_cpu_tensors
from wavecl.config import ModelConfig, from_dict, load_config
from wavecl.inference_settings import InferenceSettings
from wavecl.jsonio import read_json
from wavecl.model.hub import MODEL_CARD_FILENAME, TrainingRecord, download_pretrained, is_repository_id, model_card
from wavecl.model.parameters import count_parameters
from wavecl.model.text import encoder_from_config
from wavecl.model.weights import load_weights
from wavecl.run_directory import RunDirectory

CONFIG_FILENAME = "config.json"
PREPROCESSOR_FILENAME = "preprocessor_config.json"
TEXT_ENCODER_DIRNAME = "text_encoder"
ONNX_DIRNAME = "onnx"
"""The subfolder of a pretrained folder that ``wavecl export --onnx`` writes (:mod:`wavecl.model.onnx_export`)."""

PRETRAINED_ENTRIES = frozenset(
    {CONFIG_FILENAME, MODEL_FILENAME, PREPROCESSOR_FILENAME, TEXT_ENCODER_DIRNAME, ONNX_DIRNAME, MODEL_CARD_FILENAME}
)
HUB_FILES = [CONFIG_FILENAME, MODEL_FILENAME, PREPROCESSOR_FILENAME, f"{TEXT_ENCODER_DIRNAME}/*", MODEL_CARD_FILENAME]
"""What is fetched of a Hub repository: the files a pretrained folder loads from, and its card."""

ModelT = TypeVar("ModelT", bound=nn.Module)


@dataclass
class PretrainedSource:
    """Where the parts of a model come from.

    Attributes:
        weights: the ``model.safetensors`` file.
        config: the network configuration.
        text_encoder_dir: the saved encoder config and tokenizer (pretrained folders), or ``None`` when
            the encoder is built from ``config.text_encoder`` (training runs).
        inference_settings: how the model runs: the defaults, with the recorded resize and window.
    """

    weights: Path
    config: ModelConfig
    text_encoder_dir: Path | None
    inference_settings: InferenceSettings


def _read_json(path: Path) -> dict:
    values = read_json(path)
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return values


def resolve_pretrained(path: str | os.PathLike[str]) -> PretrainedSource:
    """Find weights, config and text encoder for a pretrained folder, training run or checkpoint, or a
    Hub repository id (``owner/name``, where no such local path exists) holding a pretrained folder.

    Raises:
        FileNotFoundError: nothing usable at ``path`` (the message says what was looked for).
        MissingPackageError: a repository id, without ``huggingface_hub`` installed.
        ValueError: a config file is malformed.
    """
    path = Path(path)
    if not path.exists():
        if not is_repository_id(path.as_posix()):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        path = download_pretrained(path.as_posix(), HUB_FILES)
    weights_file = path if path.is_file() and path.suffix == ".safetensors" else None
    folder = path.parent if weights_file is not None else path
    if (folder / CONFIG_FILENAME).is_file() and (weights_file or folder / MODEL_FILENAME).is_file():
        config = from_dict({"model": _read_json(folder / CONFIG_FILENAME)}, str(folder / CONFIG_FILENAME)).model
        text_encoder_dir = folder / TEXT_ENCODER_DIRNAME
        if not (text_encoder_dir / CONFIG_FILENAME).is_file():
            raise FileNotFoundError(f"pretrained folder {folder} has no {TEXT_ENCODER_DIRNAME}/{CONFIG_FILENAME}")
        preprocessor = folder / PREPROCESSOR_FILENAME
        settings = InferenceSettings()
        if preprocessor.is_file():
            settings = settings.with_recorded(_read_json(preprocessor), str(preprocessor))
        return PretrainedSource(weights_file or folder / MODEL_FILENAME, config, text_encoder_dir, settings)

    checkpoint_dir = latest_checkpoint(folder)
    run = RunDirectory.of_checkpoint(checkpoint_dir)
    if run is None:
        raise FileNotFoundError(
            f"no configuration for checkpoint {checkpoint_dir}: a training run keeps its {RunDirectory.CONFIG} two "
            f"folders up (<run>/{RunDirectory.CHECKPOINTS}/<folder>), a pretrained folder has {CONFIG_FILENAME} "
            f"beside {MODEL_FILENAME}"
        )
    run_config = load_config(run.config)
    try:
        settings = InferenceSettings.of_run(run_config.data)
    except ValueError as error:
        raise ValueError(f"{run.config}: {error}") from error
    return PretrainedSource(weights_file or checkpoint_dir / MODEL_FILENAME, run_config.model, None, settings)


def _build_text_encoder(folder: Path) -> tuple[transformers.PreTrainedModel, transformers.PreTrainedTokenizerBase]:
    """A randomly initialised encoder from a saved Hugging Face config, and the saved tokenizer."""
    encoder = encoder_from_config(folder)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read the text encoder tokenizer in {folder}: {error}") from error
    return encoder, tokenizer


def build_pretrained(model_class: type[ModelT], source: PretrainedSource, device: str | torch.device = "cpu") -> ModelT:
    """Build ``model_class`` from the parts :func:`resolve_pretrained` found.

    Returns:
        The model, in eval mode, on ``device``, with ``source.inference_settings`` as its
        ``inference_settings``.

    Raises:
        FileNotFoundError: nothing usable at ``path``.
        ValueError: a config is malformed, or the weights file is unreadable
            (:class:`~wavecl.checkpoint.CheckpointError`) or does not fit the config
            (:class:`~wavecl.model.weights.CheckpointMismatchError`); messages name the file.
    """
    settings = source.inference_settings
    if source.text_encoder_dir is not None:
        text_encoder, tokenizer = _build_text_encoder(source.text_encoder_dir)
        model = model_class(source.config, text_encoder=text_encoder, tokenizer=tokenizer, inference_settings=settings)
    else:
        model = model_class(source.config, inference_settings=settings)
    load_weights(model, source.weights)
    return model.to(device).eval()


def save_pretrained(
    model: PretrainedMixin,
    directory: str | os.PathLike[str],
    settings: InferenceSettings,
    training: TrainingRecord | None = None,
) -> Path:
    """Write ``model`` as a self-contained pretrained folder (layout in the module docstring).

    Everything is written into a temporary folder beside ``directory`` that then replaces it, so a
    reader sees the old folder or the complete new one. An existing ``directory`` is replaced only
    if it holds nothing but what this function writes.

    Args:
        model: the network (any device; weights are copied to the CPU).
        directory: the folder to (over)write.
        settings: whose resize and window to record (:data:`~wavecl.inference_settings.RECORDED_SETTINGS`,
            in ``preprocessor_config.json``): the model's own, ``model.inference_settings``, or others.
        training: the training run the weights come from, for the model card.

    Returns:
        ``directory``.
    """
    directory = Path(directory)
    recorded = settings.recorded()
    if directory.exists():
        if not directory.is_dir():
            raise ValueError(f"cannot save a pretrained model to {directory}: it is a file")
        foreign = sorted(entry.name for entry in directory.iterdir() if entry.name not in PRETRAINED_ENTRIES)
        if foreign:
            raise ValueError(
                f"refusing to overwrite {directory}: it holds {foreign}, which save_pretrained does not write"
            )
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_directory(directory)
    try:
        (staging / CONFIG_FILENAME).write_text(
            json.dumps(dataclasses.asdict(model.config), indent=2) + "\n", encoding="utf-8"
        )
        with atomic_path(staging / MODEL_FILENAME) as temporary:  # safetensors itself writes mode 0600
            save_file(unshared_cpu_tensors(model.state_dict()), str(temporary), metadata={"format": "pt"})
        (staging / PREPROCESSOR_FILENAME).write_text(json.dumps(recorded, indent=2) + "\n", encoding="utf-8")
        model.text_encoder.config.save_pretrained(staging / TEXT_ENCODER_DIRNAME)
        model.tokenizer.save_pretrained(staging / TEXT_ENCODER_DIRNAME)
        card = model_card(model.config, model.text_encoder.config, count_parameters(model), settings, training)
        (staging / MODEL_CARD_FILENAME).write_text(card, encoding="utf-8")
        replace_directory(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


class PretrainedMixin(nn.Module):
    """``from_pretrained`` / ``save_pretrained`` / ``export_pretrained`` for a model class built as
    ``cls(config, text_encoder=None, tokenizer=None, inference_settings=None)`` (the way Hugging Face's
    ``PreTrainedModel`` builds ``cls(config)``); :class:`~wavecl.model.wavecl.WaveCL` inherits them."""

    config: ModelConfig
    text_encoder: transformers.PreTrainedModel
    tokenizer: transformers.PreTrainedTokenizerBase
    inference_settings: InferenceSettings
    """How the model runs unless told otherwise; recorded by :meth:`save_pretrained`."""

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Self:
        """Load a pretrained folder, a training run directory or a checkpoint, offline; or a pretrained folder
        from the Hugging Face Hub by repository id.

        Args:
            path: see :func:`resolve_pretrained`.
            device: where the returned model lives.

        Returns:
            The model, in eval mode, on ``device``.

        Raises:
            FileNotFoundError: nothing usable at ``path``.
            MissingPackageError: a repository id, without ``huggingface_hub`` installed.
            ValueError: a config is malformed, or the weights are unreadable or do not fit the config;
                the message names the file.
        """
        return build_pretrained(cls, resolve_pretrained(path), device)

    def save_pretrained(
        self,
        directory: str | os.PathLike[str],
        settings: InferenceSettings | None = None,
        training: TrainingRecord | None = None,
    ) -> Path:
        """Write a self-contained pretrained folder (:func:`save_pretrained`) recording ``settings``, the
        model's own when ``None``."""
        return save_pretrained(self, directory, self.inference_settings if settings is None else settings, training)

    @classmethod
    def export_pretrained(
        cls,
        checkpoint: str | os.PathLike[str],
        directory: str | os.PathLike[str],
        training: TrainingRecord | None = None,
    ) -> Path:
        """Turn a training run or checkpoint into a self-contained pretrained folder.

        The run's evaluation resize (``data.eval_short_size`` / ``eval_max_size``) and window
        (``data.window_size``) are recorded as the folder's ``preprocessor_config.json``, and the text
        encoder's config and tokenizer are copied in, so the folder no longer needs the run, its config
        or the encoder's original files. ``training`` (what ``wavecl export`` reads from the run) goes
        into the model card.

        Returns:
            ``directory``.
        """
        source = resolve_pretrained(checkpoint)
        return save_pretrained(build_pretrained(cls, source), directory, source.inference_settings, training)
