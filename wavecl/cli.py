"""The ``wavecl`` command: info | train | evaluate | predict | prepare | demo.

Configuration values come from a YAML file (``--config``); a flag overrides the file only when it is
given explicitly, and ``--set section.field=value`` reaches any field. Heavy modules (the model, the
datasets) are imported inside the command handlers, so ``wavecl --help`` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from wavecl.config import Config, apply_overrides, load_config, parse_override

console = Console(soft_wrap=True)  # long paths stay on one line, ready to copy
error_console = Console(stderr=True, soft_wrap=True)

A2D_GT_FILENAME = "a2d_sentences_test_annotations_in_coco_format.json"
JHMDB_GT_FILENAME = "jhmdb_sentences_gt_annotations_in_coco_format.json"
METRICS_FILENAME = "metrics.json"

# Shortcut flags: argparse destination -> (flags, config field, argparse keywords). Their defaults are
# SUPPRESS, so a flag that is not typed never overrides the file.
SHORTCUTS: dict[str, tuple[tuple[str, ...], str, dict[str, Any]]] = {
    "epochs": (("--epochs",), "train.epochs", {"type": int, "help": "total epochs"}),
    "batch_size": (("--batch-size", "-bs"), "train.batch_size", {"type": int, "help": "clips per process"}),
    "lr": (("--lr",), "train.lr", {"type": float, "help": "learning rate of the rest of the network"}),
    "lr_backbone": (
        ("--lr-backbone",),
        "train.lr_backbone",
        {"type": float, "help": "learning rate of the Video-Swin backbone"},
    ),
    "text_encoder_lr": (
        ("--text-encoder-lr",),
        "train.text_encoder_lr",
        {"type": float, "help": "learning rate of the text encoder"},
    ),
    "lr_drop": (
        ("--lr-drop",),
        "train.lr_drop",
        {"type": int, "nargs": "+", "help": "epochs at which the lr is multiplied by gamma"},
    ),
    "lr_gamma": (("--lr-gamma",), "train.lr_gamma", {"type": float, "help": "lr decay factor at each milestone"}),
    "version": (("--version",), "train.version", {"type": str, "help": "run name: <output-dir>/<dataset>/<version>"}),
    "output_dir": (
        ("--output-dir",),
        "train.output_dir",
        {"type": str, "help": "root of run directories (default runs)"},
    ),
    "pretrained": (
        ("--pretrained",),
        "train.pretrained_weights",
        {"type": str, "help": "finetune from this checkpoint (class heads re-initialised; a fresh run, not a resume)"},
    ),
    "eval_interval": (
        ("--eval-interval",),
        "train.eval_interval",
        {"type": int, "help": "evaluate every N epochs (and after the last)"},
    ),
    "amp": (("--amp",), "train.amp", {"choices": ["off", "bf16", "fp16"], "help": "autocast on CUDA"}),
    "window_size": (("--window-size", "-ws"), "data.window_size", {"type": int, "help": "frames per clip"}),
    "data_root": (("--data-root",), "data.root", {"type": str, "help": "dataset root folder"}),
    "backbone_pretrained_path": (
        ("--backbone-pretrained-path", "-bpp"),
        "model.backbone_pretrained_path",
        {"type": str, "help": "Kinetics Video-Swin .pth"},
    ),
    "text_encoder": (
        ("--text-encoder",),
        "model.text_encoder",
        {"type": str, "help": "Hugging Face encoder folder, or 'minilm'"},
    ),
}
TRAIN_SHORTCUTS = tuple(SHORTCUTS)
EVALUATE_SHORTCUTS = ("window_size", "data_root", "text_encoder", "amp")

CONFIG_HELP_EPILOG = """\
Any config field can be set with --set SECTION.FIELD=VALUE (the value is read as YAML), e.g.
  --set model.eval_layer=reference --set data.num_workers=2 --set train.max_steps_per_epoch=10
"""


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--config",
        "-c",
        required=required,
        help="YAML config (wavecl or original {desc, value} format), e.g. configs/a2d_sentences.yaml",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override any config field, e.g. --set model.eval_layer=reference (repeatable)",
    )


def add_shortcut_arguments(parser: argparse.ArgumentParser, names: tuple[str, ...] = TRAIN_SHORTCUTS) -> None:
    for name in names:
        flags, _, keywords = SHORTCUTS[name]
        parser.add_argument(*flags, dest=name, default=argparse.SUPPRESS, **keywords)


def resolve_config(args: argparse.Namespace) -> tuple[Config, dict[str, Any]]:
    """The config file plus explicitly given flags; returns the config and those overrides."""
    config = load_config(args.config)
    overrides: dict[str, Any] = {}
    for destination, (_, field, _) in SHORTCUTS.items():
        if hasattr(args, destination):
            overrides[field] = getattr(args, destination)
    for text in args.overrides:
        key, value = parse_override(text)
        overrides[key] = value
    return apply_overrides(config, overrides), overrides


def count_parameters(module) -> tuple[int, int]:
    parameters = list(module.parameters())
    return sum(p.numel() for p in parameters), sum(p.numel() for p in parameters if p.requires_grad)


def parameters_per_component(model) -> dict[str, tuple[int, int]]:
    """(total, trainable) per top-level child; a parameter registered under several names (the box
    heads, also ``transformer.decoder.bbox_embed``) counts once, for its shortest name, so the rows add
    up to the total."""
    owner: dict[int, str] = {}
    for name, parameter in sorted(model.named_parameters(remove_duplicate=False), key=lambda item: item[0].count(".")):
        owner.setdefault(id(parameter), name.split(".")[0])
    counts = {name: (0, 0) for name, _ in model.named_children()}
    for parameter in model.parameters():
        total, trainable = counts[owner[id(parameter)]]
        counts[owner[id(parameter)]] = (
            total + parameter.numel(),
            trainable + parameter.numel() * parameter.requires_grad,
        )
    return counts


def print_metrics_table(title: str, metrics: dict[str, float]) -> None:
    table = Table(title=escape(title))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(escape(name), f"{value:.4f}")
    console.print(table)


# ------------------------------------------------------------------------------------------- info


def command_info(args: argparse.Namespace) -> None:
    from wavecl.model.wavecl import WaveCL

    config, _ = resolve_config(args)
    model = WaveCL(config.model)
    table = Table(title=escape(f"WaveCL parameters ({args.config})"))
    table.add_column("component")
    table.add_column("parameters", justify="right")
    table.add_column("trainable", justify="right")
    for name, (total, trainable) in parameters_per_component(model).items():
        table.add_row(name, f"{total:,}", f"{trainable:,}")
    total, trainable = count_parameters(model)
    table.add_row("[bold]total", f"[bold]{total:,}", f"[bold]{trainable:,}")
    console.print(table)


# ------------------------------------------------------------------------------------------ train


def command_train(args: argparse.Namespace) -> None:
    from wavecl.training.distributed import cleanup, init_distributed
    from wavecl.training.trainer import Trainer

    config, overrides = resolve_config(args)
    dist = init_distributed(args.device)
    try:
        trainer = Trainer(config, dist, explicit_overrides=overrides, resume=args.resume)
        metrics = trainer.fit()
        if dist.is_main:
            console.print(f"run directory: {escape(str(trainer.run_dir))}")
            if metrics:
                print_metrics_table(f"last evaluation ({config.data.dataset_name})", metrics)
    finally:
        cleanup()


# --------------------------------------------------------------------------------------- evaluate


def load_evaluation_weights(model, checkpoint: str | Path) -> Path:
    """Load a checkpoint into ``model`` strictly; returns the file or folder the weights came from.

    Args:
        model: the :class:`~wavecl.model.wavecl.WaveCL` built from the evaluation config.
        checkpoint: a wavecl run directory, ``checkpoints`` folder, checkpoint folder or pointer
            (``last``/``best``), a pretrained folder, a ``model.safetensors`` file, or a checkpoint
            written by the reference implementation (``.pth``/``.pth.tar``, keys renamed).

    Raises:
        FileNotFoundError: nothing at ``checkpoint``.
        ValueError: the file is unreadable, or its keys or shapes do not fit the model (missing and
            unexpected keys are listed).
    """
    from wavecl.inference.pretrained import load_weights
    from wavecl.model.wavecl import convert_reference_state_dict
    from wavecl.training.checkpoint import REFERENCE_SUFFIXES, latest_checkpoint, load_model_weights

    path = Path(checkpoint)
    if path.name.endswith(REFERENCE_SUFFIXES):
        source = path
        try:
            state = convert_reference_state_dict(load_model_weights(path))
        except ValueError as error:
            raise ValueError(f"{path} is not a checkpoint of the reference implementation: {error}") from error
    else:
        source = path if path.suffix == ".safetensors" else latest_checkpoint(path)
        state = load_model_weights(source)
    load_weights(model, state, source)
    return source


def default_evaluation_dir(config: Config) -> Path:
    """``<train.output_dir>/<dataset>/<train.version>/evaluation``."""
    return config.run_directory() / "evaluation"


def command_evaluate(args: argparse.Namespace) -> None:
    from wavecl.atomic import write_json

    config, _ = resolve_config(args)
    if (args.checkpoint is None) == (args.predictions is None):
        raise ValueError("give exactly one of --checkpoint (run the model) and --predictions (score saved predictions)")
    if args.predictions is not None:
        from wavecl.evaluation.saved import evaluate_saved_predictions

        metrics = evaluate_saved_predictions(config, args.predictions)
        record = {"dataset": config.data.dataset_name, "predictions": str(args.predictions), "metrics": metrics}
        if args.out_dir is not None:
            write_json(Path(args.out_dir) / METRICS_FILENAME, record, indent=2)
            console.print(f"metrics written to {escape(str(Path(args.out_dir) / METRICS_FILENAME))}")
        print_metrics_table(f"{config.data.dataset_name} evaluation of saved predictions", metrics)
        return

    from wavecl.evaluation.build import evaluate_model
    from wavecl.model.wavecl import WaveCL
    from wavecl.training.distributed import cleanup, init_distributed

    out_dir = Path(args.out_dir) if args.out_dir is not None else default_evaluation_dir(config)
    dist = init_distributed(args.device)
    try:
        model = WaveCL(config.model)
        source = load_evaluation_weights(model, args.checkpoint)
        model.to(dist.device)
        if dist.is_main:
            console.print(f"evaluating {escape(str(source))} on {config.data.dataset_name}")
        metrics, _ = evaluate_model(model, config, out_dir, dist)
        if dist.is_main:
            record = {
                "dataset": config.data.dataset_name,
                "checkpoint": str(source.absolute()),
                "config": str(args.config),
                "world_size": dist.world_size,
                "metrics": metrics,
            }
            write_json(out_dir / METRICS_FILENAME, record, indent=2)
            print_metrics_table(f"{config.data.dataset_name} evaluation", metrics)
            console.print(f"outputs in {escape(str(out_dir))} (metrics: {METRICS_FILENAME})")
    finally:
        cleanup()


# ---------------------------------------------------------------------------------------- predict


def command_predict(args: argparse.Namespace) -> None:
    import torch

    from wavecl.inference.run import predict_video

    if (args.video is None) == (args.video_path is None):
        raise ValueError("give the video once: as the VIDEO argument or with --video")
    video = args.video or args.video_path
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out_dir = Path(args.out_dir) if args.out_dir is not None else Path("predictions") / Path(video).stem
    paths = predict_video(
        args.checkpoint,
        video,
        args.text,
        out_dir,
        device=device,
        window=args.window,
        short_size=args.short_size,
        max_size=args.max_size,
        amp=not args.no_amp,
    )
    console.print(f"{paths.num_frames} frames segmented for {len(args.text)} sentence(s)")
    for sentence, folder in zip(args.text, paths.mask_dirs):
        console.print(f"  masks of {escape(repr(sentence))}: {escape(str(folder))}")
    console.print(f"  overlay video: {escape(str(paths.overlay_video))}")
    console.print(f"  contact sheet: {escape(str(paths.contact_sheet))}")


# ---------------------------------------------------------------------------------------- prepare


def command_prepare_a2d_gt(args: argparse.Namespace) -> None:
    from wavecl.data.a2d import A2DPaths
    from wavecl.data.coco_gt import build_a2d_coco_gt

    out = Path(args.out) if args.out else A2DPaths.find(args.root).root / A2D_GT_FILENAME
    document = build_a2d_coco_gt(args.root, out)
    console.print(f"A2D-Sentences test ground truth: {len(document['images'])} samples -> {escape(str(out))}")


def command_prepare_jhmdb_gt(args: argparse.Namespace) -> None:
    from wavecl.data.coco_gt import build_jhmdb_coco_gt
    from wavecl.data.jhmdb import JHMDBPaths

    out = Path(args.out) if args.out else JHMDBPaths.find(args.root).root / JHMDB_GT_FILENAME
    document = build_jhmdb_coco_gt(args.root, out, args.samples_metadata, args.seed)
    console.print(f"JHMDB-Sentences ground truth: {len(document['images'])} frames -> {escape(str(out))}")


def command_prepare_ytvos_samples(args: argparse.Namespace) -> None:
    from wavecl.data.ytvos import YTVOSPaths, build_ytvos_train_samples, train_samples_cache_path

    out = Path(args.out) if args.out else train_samples_cache_path(YTVOSPaths.find(args.root).root, args.window_size)
    samples = build_ytvos_train_samples(args.root, args.window_size, out, num_workers=args.workers)
    console.print(f"Ref-YouTube-VOS training windows (size {args.window_size}): {len(samples)} -> {escape(str(out))}")


def command_prepare_davis(args: argparse.Namespace) -> None:
    from wavecl.data.davis import DATASET_FOLDER_NAMES, convert_davis
    from wavecl.data.paths import resolve_dataset_root

    out = Path(args.out) if args.out else resolve_dataset_root(args.root, DATASET_FOLDER_NAMES, "DAVIS")
    conversion = convert_davis(args.root, out, mode="copy" if args.copy else "symlink")
    for split, videos in conversion.videos.items():
        console.print(
            f"Ref-DAVIS17 {split}: {len(videos)} videos, {conversion.num_expressions[split]} expressions -> "
            f"{escape(str(conversion.meta_expressions[split]))}"
        )


def command_prepare_synthetic(args: argparse.Namespace) -> None:
    from wavecl.data.synthetic import write_synthetic_ytvos

    size = (args.size[0], args.size[1])
    for split, count in (("train", args.videos), ("valid", args.valid_videos)):
        info = write_synthetic_ytvos(args.root, count, num_frames=args.frames, size=size, seed=args.seed, split=split)
        expressions = sum(len(video.expressions) for video in info.videos)
        where = escape(str(Path(args.root) / split))
        console.print(f"synthetic {split}: {count} videos, {expressions} expressions -> {where}")


# ------------------------------------------------------------------------------------------- demo


def command_demo(args: argparse.Namespace) -> None:
    from wavecl.demo import run_demo

    run_demo(args.out_dir, minutes=args.minutes, seed=args.seed, device=args.device)  # prints where everything is


# ----------------------------------------------------------------------------------------- parser


def _subcommand(commands, name: str, summary: str, description: str, examples: str) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_prepare_parsers(prepare: argparse.ArgumentParser) -> None:
    tasks = prepare.add_subparsers(dest="task", required=True, metavar="TASK")

    a2d = _subcommand(
        tasks,
        "a2d-gt",
        "A2D-Sentences test ground truth in COCO format",
        "Write the COCO-format ground truth of the A2D-Sentences test samples (one RLE mask per sample),\n"
        "which evaluation reads as data.coco_gt_path.",
        f"  wavecl prepare a2d-gt --root data/a2d_sentences\n  (writes data/a2d_sentences/{A2D_GT_FILENAME})\n",
    )
    a2d.add_argument(
        "--root",
        default="data/a2d_sentences",
        help="A2D-Sentences folder or its parent (default data/a2d_sentences)",
    )
    a2d.add_argument("--out", default=None, help=f"output json (default <root>/{A2D_GT_FILENAME})")
    a2d.set_defaults(handler=command_prepare_a2d_gt)

    jhmdb = _subcommand(
        tasks,
        "jhmdb-gt",
        "JHMDB-Sentences ground truth in COCO format",
        "Write the COCO-format ground truth of the evaluated JHMDB-Sentences frames (3 per video).\n"
        "Use the same --samples-metadata/--seed as the evaluation config (data.jhmdb_samples_metadata).",
        "  wavecl prepare jhmdb-gt --root data/jhmdb_sentences\n"
        "  wavecl prepare jhmdb-gt --root data/jhmdb_sentences \\\n"
        "      --samples-metadata data/jhmdb_sentences/jhmdb_sentences_samples_metadata.json\n",
    )
    jhmdb.add_argument(
        "--root",
        default="data/jhmdb_sentences",
        help="JHMDB-Sentences folder or its parent (default data/jhmdb_sentences)",
    )
    jhmdb.add_argument("--out", default=None, help=f"output json (default <root>/{JHMDB_GT_FILENAME})")
    jhmdb.add_argument(
        "--samples-metadata",
        default=None,
        help="MTTR-format sample list; default: draw 3 frames per video",
    )
    jhmdb.add_argument("--seed", type=int, default=42, help="seed of the frame draw (default 42, as the reference)")
    jhmdb.set_defaults(handler=command_prepare_jhmdb_gt)

    ytvos = _subcommand(
        tasks,
        "ytvos-samples",
        "Ref-YouTube-VOS training windows (cached sample list)",
        "Regenerate the Ref-YouTube-VOS training windows and write them where the dataset looks for its\n"
        "cache (the training run would otherwise build them in one process on first use).",
        "  wavecl prepare ytvos-samples --root data/refer_youtube_vos --window-size 8 --workers 8\n",
    )
    ytvos.add_argument(
        "--root",
        default="data/refer_youtube_vos",
        help="Ref-YouTube-VOS folder or its parent (default data/refer_youtube_vos)",
    )
    ytvos.add_argument("--window-size", type=int, default=8, help="frames per training window (default 8)")
    ytvos.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes reading annotation PNGs (default 0: this process)",
    )
    ytvos.add_argument("--out", default=None, help="output json (default <root>/wavecl_ytvos_train_samples_ws<N>.json)")
    ytvos.set_defaults(handler=command_prepare_ytvos_samples)

    davis = _subcommand(
        tasks,
        "davis",
        "convert Ref-DAVIS17 to the Ref-YouTube-VOS layout",
        "Write train/ and valid/ (frame and mask folders linked, or copied with --copy) and the\n"
        "meta_expressions files of Ref-DAVIS17. The raw DAVIS files are not moved.",
        "  wavecl prepare davis --root data/refer-davis\n",
    )
    davis.add_argument(
        "--root",
        default="data/refer-davis",
        help="raw Ref-DAVIS root (holding DAVIS/ and davis_text_annotations/) or its parent",
    )
    davis.add_argument("--out", default=None, help="output root (default: the Ref-DAVIS root itself)")
    davis.add_argument("--copy", action="store_true", help="copy frame and mask folders instead of symlinking them")
    davis.set_defaults(handler=command_prepare_davis)

    synthetic = _subcommand(
        tasks,
        "synthetic",
        "write the synthetic referring-video dataset",
        "Write a synthetic dataset of moving shapes in the Ref-YouTube-VOS layout, with a held-out\n"
        "valid split that has ground truth (for local J&F).",
        "  wavecl prepare synthetic --root data/synthetic --videos 64 --valid-videos 16 --seed 0\n",
    )
    synthetic.add_argument("--root", default="data/synthetic", help="output root (default data/synthetic)")
    synthetic.add_argument("--videos", type=int, default=64, help="training videos (default 64)")
    synthetic.add_argument("--valid-videos", type=int, default=16, help="held-out videos (default 16)")
    synthetic.add_argument("--frames", type=int, default=8, help="frames per video (default 8)")
    synthetic.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(64, 96),
        metavar=("H", "W"),
        help="frame size (default 64 96)",
    )
    synthetic.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synthetic.set_defaults(handler=command_prepare_synthetic)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wavecl",
        description="WaveCL: referring video object segmentation with wavelet calibration.",
        epilog="examples:\n"
        "  wavecl info -c configs/tiny.yaml\n"
        "  wavecl prepare a2d-gt --root data/a2d_sentences\n"
        "  torchrun --nproc_per_node 2 -m wavecl train -c configs/a2d_sentences.yaml\n"
        "  wavecl evaluate -c configs/a2d_sentences.yaml --checkpoint runs/a2d_sentences/a2d/checkpoints/best\n"
        "  wavecl predict --checkpoint runs/ref_youtube_vos/finetuneytb_tiny --video dog.mp4 --text 'a dog jumping'\n"
        "Run `wavecl COMMAND --help` for the options of a command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = _subcommand(
        commands,
        "info",
        "parameter counts per component of a configured model",
        "Build the configured model (no weights are loaded) and print its parameter counts.",
        "  wavecl info -c configs/a2d_sentences.yaml --text-encoder minilm\n"
        "  wavecl info -c configs/tiny.yaml\n\n" + CONFIG_HELP_EPILOG,
    )
    add_config_arguments(info)
    add_shortcut_arguments(info)
    info.set_defaults(handler=command_info)

    train = _subcommand(
        commands,
        "train",
        "train (one process, or one rank under torchrun)",
        "Train WaveCL. Outputs go to <output-dir>/<dataset>/<version>/: config.yaml, run_info.json,\n"
        "log.jsonl, tensorboard/, checkpoints/epoch_XXXX/ with 'last' and 'best' pointer files, and\n"
        "eval/epoch_XXXX/ (predictions, submission or tables of each evaluation).",
        "  wavecl train -c configs/a2d_sentences.yaml --device cpu --set train.max_steps_per_epoch=2\n"
        "  torchrun --nproc_per_node 8 -m wavecl train -c configs/coco.yaml -bpp pretrained/swin_tiny.pth\n"
        "  wavecl train -c configs/a2d_sentences_finetune.yaml --pretrained runs/coco/coco_pretrain_tiny\n"
        "  wavecl train -c configs/a2d_sentences.yaml --resume runs/a2d_sentences/a2d\n\n" + CONFIG_HELP_EPILOG,
    )
    add_config_arguments(train)
    add_shortcut_arguments(train)
    train.add_argument(
        "--resume",
        type=str,
        default=None,
        help="run directory or checkpoint folder to continue exactly",
    )
    train.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default=None,
        help="cpu or cuda (default: cuda when available)",
    )
    train.set_defaults(handler=command_train)

    evaluate = _subcommand(
        commands,
        "evaluate",
        "evaluate a checkpoint, or score saved predictions",
        "Evaluate with the protocol of the config's dataset:\n"
        "  a2d_sentences / jhmdb_sentences: COCO mask mAP, P@0.5..0.9, overall and mean IoU;\n"
        "  ref_youtube_vos: Annotations/ PNGs and submission.zip for the evaluation server;\n"
        "  coco: per-set box and mask mAP and P@K (RefCOCO/+/g val); davis: J&F (four annotators);\n"
        "  synthetic: J, F and J&F on the held-out split.\n"
        "With --checkpoint the model runs (also under torchrun) and writes its predictions and\n"
        "metrics.json into --out-dir (default <output-dir>/<dataset>/<version>/evaluation).\n"
        "With --predictions the metrics are recomputed from an earlier evaluation's files:\n"
        "predictions.json (A2D/JHMDB), the folder of <set>_predictions.json (coco), the folder holding\n"
        "anno_0..3 (davis), the folder holding Annotations/ or its zip (synthetic; ref_youtube_vos: a\n"
        "completeness check of the submission).",
        "  wavecl evaluate -c configs/a2d_sentences.yaml --checkpoint runs/a2d_sentences/a2d/checkpoints/best\n"
        "  wavecl evaluate -c configs/a2d_sentences.yaml --checkpoint reference_a2d.pth.tar\n"
        "  torchrun --nproc_per_node 2 -m wavecl evaluate -c configs/jhmdb_sentences.yaml \\\n"
        "      --checkpoint runs/a2d_sentences/a2d\n"
        "  wavecl evaluate -c configs/a2d_sentences.yaml \\\n"
        "      --predictions runs/a2d_sentences/a2d/evaluation/predictions.json\n\n" + CONFIG_HELP_EPILOG,
    )
    add_config_arguments(evaluate)
    add_shortcut_arguments(evaluate, EVALUATE_SHORTCUTS)
    evaluate.add_argument(
        "--checkpoint",
        default=None,
        help="run directory, checkpoints folder, checkpoint folder or 'last'/'best' pointer, pretrained folder, "
        "or a reference .pth/.pth.tar",
    )
    evaluate.add_argument(
        "--predictions",
        default=None,
        help="saved predictions file or folder to score instead of running the model",
    )
    evaluate.add_argument("--out-dir", default=None, help="where predictions and metrics.json go")
    evaluate.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default=None,
        help="cpu or cuda (default: cuda when available)",
    )
    evaluate.set_defaults(handler=command_evaluate)

    predict = _subcommand(
        commands,
        "predict",
        "segment a video for one or more sentences",
        "Segment the objects that the sentences refer to in a video (mp4 or a folder of frames), window\n"
        "by window. Writes masks/<i>_<sentence>/<frame>.png, overlay.mp4 and contact_sheet.png.",
        "  wavecl predict --checkpoint runs/ref_youtube_vos/finetuneytb_tiny --video dog.mp4 --text 'a dog jumping'\n"
        "  wavecl predict frames/ --checkpoint pretrained/wavecl-ytvos --text 'a man' --text 'the red car' \\\n"
        "      --output out/ --device cuda\n",
    )
    predict.add_argument(
        "video_path",
        nargs="?",
        metavar="VIDEO",
        help="video file or folder of frames (same as --video)",
    )
    predict.add_argument("--checkpoint", required=True, help="pretrained folder, training run directory or checkpoint")
    predict.add_argument("--video", default=None, help="video file (mp4, ...) or folder of .jpg/.png frames")
    predict.add_argument("--text", action="append", required=True, help="referring expression (repeatable)")
    predict.add_argument(
        "--out-dir",
        "--output",
        dest="out_dir",
        default=None,
        help="output folder (default predictions/<video name>)",
    )
    predict.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default=None,
        help="cpu or cuda (default: cuda when available)",
    )
    predict.add_argument("--window", type=int, default=8, help="frames per clip (default 8)")
    predict.add_argument(
        "--short-size",
        type=int,
        default=None,
        help="resize: short side (default: the checkpoint's, else 360)",
    )
    predict.add_argument(
        "--max-size",
        type=int,
        default=None,
        help="resize: cap on the long side (default: the checkpoint's, else 640)",
    )
    predict.add_argument("--no-amp", action="store_true", help="run in fp32 on CUDA (default: autocast)")
    predict.set_defaults(handler=command_predict)

    prepare = _subcommand(
        commands,
        "prepare",
        "build ground-truth files, sample lists and converted datasets",
        "One-off preparation of the data under data/ (see README, 'Data').",
        "  wavecl prepare a2d-gt --root data/a2d_sentences\n"
        "  wavecl prepare jhmdb-gt --root data/jhmdb_sentences\n"
        "  wavecl prepare ytvos-samples --root data/refer_youtube_vos --window-size 8 --workers 8\n"
        "  wavecl prepare davis --root data/refer-davis\n"
        "  wavecl prepare synthetic --root data/synthetic --videos 64 --valid-videos 16 --seed 0\n",
    )
    _add_prepare_parsers(prepare)

    demo = _subcommand(
        commands,
        "demo",
        "train and evaluate a small model on synthetic data, end to end",
        "Write a synthetic dataset, train a reduced WaveCL on it, evaluate it and segment a video.",
        "  wavecl demo --out-dir runs/demo --minutes 5\n",
    )
    demo.add_argument("--out-dir", default="runs/demo", help="output folder (default runs/demo)")
    demo.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="approximate training budget in minutes on 2 CPU cores (default 10)",
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cpu or cuda (default cpu)")
    demo.set_defaults(handler=command_demo)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        args.handler(args)
    except (FileNotFoundError, ValueError) as error:
        error_console.print(f"[red]error:[/red] {escape(str(error))}")
        sys.exit(2)


if __name__ == "__main__":
    main()
