"""``wavecl prepare``: ground-truth files, sample lists and converted datasets, made once."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape

from wavecl.cli.common import console, subcommand

A2D_GT_FILENAME = "a2d_sentences_test_annotations_in_coco_format.json"
JHMDB_GT_FILENAME = "jhmdb_sentences_gt_annotations_in_coco_format.json"


def prepare_a2d_gt(args: argparse.Namespace) -> None:
    """``wavecl prepare a2d-gt``."""
    from wavecl.data.a2d import A2DPaths, build_a2d_coco_gt

    out = Path(args.out) if args.out else A2DPaths.find(args.root).root / A2D_GT_FILENAME
    document = build_a2d_coco_gt(args.root, out)
    console.print(f"A2D-Sentences test ground truth: {len(document['images'])} samples -> {escape(str(out))}")


def prepare_jhmdb_gt(args: argparse.Namespace) -> None:
    """``wavecl prepare jhmdb-gt``."""
    from wavecl.data.jhmdb import JHMDBPaths, build_jhmdb_coco_gt

    out = Path(args.out) if args.out else JHMDBPaths.find(args.root).root / JHMDB_GT_FILENAME
    document = build_jhmdb_coco_gt(args.root, out, args.samples_metadata, args.seed)
    console.print(f"JHMDB-Sentences ground truth: {len(document['images'])} frames -> {escape(str(out))}")


def prepare_ytvos_samples(args: argparse.Namespace) -> None:
    """``wavecl prepare ytvos-samples``."""
    from wavecl.data.ytvos import build_ytvos_train_samples, train_samples_cache_path

    out = Path(args.out) if args.out else train_samples_cache_path(args.cache_dir, args.root, args.window_size)
    samples = build_ytvos_train_samples(args.root, args.window_size, out, num_workers=args.workers)
    console.print(f"Ref-YouTube-VOS training windows (size {args.window_size}): {len(samples)} -> {escape(str(out))}")


def prepare_ytvos_holdout(args: argparse.Namespace) -> None:
    """``wavecl prepare ytvos-holdout``."""
    from wavecl.data.holdout import default_holdout_dir, write_ytvos_holdout

    out = Path(args.out) if args.out else default_holdout_dir(args.cache_dir, args.root, args.videos, args.seed)
    holdout = write_ytvos_holdout(args.root, out, args.videos, args.seed, mode="copy" if args.copy else "symlink")
    console.print(
        f"Ref-YouTube-VOS hold-out (seed {holdout.seed}): {len(holdout.held_out_videos)} videos held out, "
        f"{len(holdout.train_videos)} to train on -> {escape(str(holdout.root))}"
    )
    if holdout.left_out_expressions or holdout.kept_in_training:
        console.print(
            f"left out: {len(holdout.left_out_expressions)} held-out expressions whose object is in none of the "
            f"masks; {len(holdout.kept_in_training)} drawn videos with none to score stay in training"
        )
    console.print(f"train and score with --data-root {escape(str(holdout.root))}")


def prepare_davis(args: argparse.Namespace) -> None:
    """``wavecl prepare davis``."""
    from wavecl.data.davis import convert_davis, find_davis_folder

    out = Path(args.out) if args.out else find_davis_folder(args.root).parent
    conversion = convert_davis(args.root, out, mode="copy" if args.copy else "symlink")
    for split, videos in conversion.videos.items():
        console.print(
            f"Ref-DAVIS17 {split}: {len(videos)} videos, {conversion.num_expressions[split]} expressions -> "
            f"{escape(str(conversion.meta_expressions[split]))}"
        )


def prepare_check(args: argparse.Namespace) -> None:
    """``wavecl prepare check``: the summary on success; problems exit 2 with the summary (``wavecl.cli.main``)."""
    from wavecl.data.check import check_ytvos_dataset

    report = check_ytvos_dataset(args.root, args.splits, workers=args.workers)
    report.raise_for_problems()
    console.print(escape(report.summary()))


def prepare_synthetic(args: argparse.Namespace) -> None:
    """``wavecl prepare synthetic``, with ``--lookalike`` the look-alike clips of :mod:`wavecl.testing.lookalike`."""
    from wavecl.data.synthetic import SYNTHETIC_FRAMES, write_synthetic_ytvos
    from wavecl.testing.lookalike import LOOKALIKE_FRAMES, write_lookalike_ytvos

    write = write_lookalike_ytvos if args.lookalike else write_synthetic_ytvos
    frames = args.frames if args.frames is not None else LOOKALIKE_FRAMES if args.lookalike else SYNTHETIC_FRAMES
    size = (args.size[0], args.size[1])
    for split, count in (("train", args.videos), ("valid", args.valid_videos)):
        info = write(args.root, count, num_frames=frames, size=size, seed=args.seed, split=split)
        expressions = sum(len(video.expressions) for video in info.videos)
        where = escape(str(Path(args.root) / split))
        kind = "look-alike" if args.lookalike else "synthetic"
        console.print(f"{kind} {split}: {count} videos of {frames} frames, {expressions} expressions -> {where}")


def prepare_mevis_png(args: argparse.Namespace) -> None:
    """``wavecl prepare mevis-png``."""
    from wavecl.data.mevis import write_mevis_png

    conversion = write_mevis_png(args.root, args.split, args.out)
    objects = sum(len(video) for video in conversion.objects.values())
    console.print(
        f"MeViS {args.split}: {len(conversion.objects)} videos, {objects} objects, {conversion.frames} index PNGs "
        f"-> {escape(str(conversion.annotations))}"
    )


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``prepare`` and its tasks to the ``wavecl`` sub-commands."""
    prepare = subcommand(
        commands,
        "prepare",
        "build ground-truth files, sample lists and converted datasets",
        "One-off preparation of the data under data/ (see README, 'Data').",
        "  wavecl prepare a2d-gt --root data/a2d_sentences\n"
        "  wavecl prepare jhmdb-gt --root data/jhmdb_sentences\n"
        "  wavecl prepare ytvos-samples --root data/refer_youtube_vos --window-size 8 --workers 8\n"
        "  wavecl prepare ytvos-holdout --root data/refer_youtube_vos --videos 200 --seed 0\n"
        "  wavecl prepare davis --root data/refer-davis\n"
        "  wavecl prepare synthetic --root data/synthetic --videos 64 --valid-videos 16 --seed 0\n"
        "  wavecl prepare synthetic --lookalike --root data/lookalike --videos 64 --valid-videos 8\n"
        "  wavecl prepare check --root data/my_videos\n"
        "  wavecl prepare mevis-png --root data/mevis --split valid_u --out runs/mevis_png\n",
    )
    tasks = prepare.add_subparsers(dest="task", required=True, metavar="TASK")

    a2d = subcommand(
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
    a2d.set_defaults(handler=prepare_a2d_gt)

    jhmdb = subcommand(
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
    jhmdb.set_defaults(handler=prepare_jhmdb_gt)

    ytvos = subcommand(
        tasks,
        "ytvos-samples",
        "Ref-YouTube-VOS training windows (cached sample list)",
        "Build the Ref-YouTube-VOS training windows in parallel and write them where training looks for its\n"
        "cache (it would otherwise build them in one process on first use); an up-to-date cache is kept.\n"
        "The dataset folder is only read.",
        "  wavecl prepare ytvos-samples --root data/refer_youtube_vos --window-size 8 --workers 8\n"
        "  wavecl prepare ytvos-samples --root /shared/refer_youtube_vos --cache-dir runs/cache\n",
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
    ytvos.add_argument(
        "--cache-dir",
        default=None,
        help="cache root, as data.cache_dir of the training config (default $WAVECL_CACHE_DIR or ~/.cache/wavecl)",
    )
    ytvos.add_argument("--out", default=None, help="output json (default: the training cache file under --cache-dir)")
    ytvos.set_defaults(handler=prepare_ytvos_samples)

    holdout = subcommand(
        tasks,
        "ytvos-holdout",
        "hold out Ref-YouTube-VOS training videos for local J&F",
        "Draw --videos training videos with --seed and write a Ref-YouTube-VOS-layout view whose valid\n"
        "split is those videos, with their masks, and whose train split is the others (video folders\n"
        "linked, or copied with --copy). Train and evaluate with --data-root <view>: J and F are computed\n"
        "locally. The dataset folder is only read; a previous view at the output is replaced.\n"
        "Not comparable with the server's numbers (docs/datasets.md#local-validation-on-ref-youtube-vos).",
        "  wavecl prepare ytvos-holdout --root data/refer_youtube_vos --videos 200 --seed 0\n"
        "  wavecl prepare ytvos-holdout --root data/refer_youtube_vos --videos 200 --seed 0 --out runs/holdout\n",
    )
    holdout.add_argument(
        "--root",
        default="data/refer_youtube_vos",
        help="Ref-YouTube-VOS folder or its parent (default data/refer_youtube_vos)",
    )
    holdout.add_argument("--videos", type=int, required=True, help="training videos to hold out")
    holdout.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    holdout.add_argument(
        "--cache-dir",
        default=None,
        help="cache root of the default output (default $WAVECL_CACHE_DIR or ~/.cache/wavecl)",
    )
    holdout.add_argument(
        "--out",
        default=None,
        help="view folder (default <cache>/<dataset>-<hash>/ytvos_holdout_n<videos>_seed<seed>)",
    )
    holdout.add_argument("--copy", action="store_true", help="copy video folders instead of symlinking them")
    holdout.set_defaults(handler=prepare_ytvos_holdout)

    davis = subcommand(
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
    davis.set_defaults(handler=prepare_davis)

    check = subcommand(
        tasks,
        "check",
        "check a Ref-YouTube-VOS-layout dataset whole, as training does before it starts",
        "Check layout, ids, sentences, that every listed frame exists, that masks (where a split has\n"
        "Annotations/) exist, are palette or grey PNGs of their frame's size, and that every expression's\n"
        "obj_id appears in at least one of its video's masks. Headers only, except the few masks needed\n"
        "to find the objects. Prints what was found per split; problems exit with status 2 and are listed\n"
        "(file, video and key). Covers Ref-YouTube-VOS, one's own data in its layout and the synthetic set.",
        "  wavecl prepare check --root data/my_videos\n"
        "  wavecl prepare check --root data/refer_youtube_vos --splits train\n",
    )
    check.add_argument("--root", required=True, help="dataset folder (Ref-YouTube-VOS layout) or its parent")
    check.add_argument(
        "--splits",
        nargs="+",
        choices=("train", "valid"),
        default=["train", "valid"],
        help="splits to check (default: train valid)",
    )
    check.add_argument("--workers", type=int, default=0, help="processes checking videos (default 0: this process)")
    check.set_defaults(handler=prepare_check)

    synthetic = subcommand(
        tasks,
        "synthetic",
        "write the synthetic referring-video dataset",
        "Write a synthetic dataset of moving shapes in the Ref-YouTube-VOS layout, with a held-out\n"
        "valid split that has ground truth (for local J&F). With --lookalike, every clip holds two shapes\n"
        "of one colour, kind and size that cross and swap places, told apart only by the motion or half\n"
        "of the frame in their sentences: long clips for identity switches between windows.",
        "  wavecl prepare synthetic --root data/synthetic --videos 64 --valid-videos 16 --seed 0\n"
        "  wavecl prepare synthetic --lookalike --root data/lookalike --videos 64 --valid-videos 8\n",
    )
    synthetic.add_argument("--root", default="data/synthetic", help="output root (default data/synthetic)")
    synthetic.add_argument("--videos", type=int, default=64, help="training videos (default 64)")
    synthetic.add_argument("--valid-videos", type=int, default=16, help="held-out videos (default 16)")
    synthetic.add_argument("--frames", type=int, default=None, help="frames per video (default 8; 48 with --lookalike)")
    synthetic.add_argument(
        "--lookalike", action="store_true", help="clips of two look-alike shapes that cross (see above)"
    )
    synthetic.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(64, 96),
        metavar=("H", "W"),
        help="frame size (default 64 96)",
    )
    synthetic.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synthetic.set_defaults(handler=prepare_synthetic)

    mevis_png = subcommand(
        tasks,
        "mevis-png",
        "MeViS mask_dict.json to index PNG Annotations/",
        "Convert the COCO RLE masks of a MeViS split (mask_dict.json) into index PNGs\n"
        "<out>/Annotations/<video>/<frame>.png. In each video the objects its expressions refer to get the\n"
        "pixel values 1, 2, ... in increasing anno_id order (0 is background); where objects overlap, the\n"
        "larger anno_id wins. <out>/objects.json maps every video's anno_id to its pixel value. The dataset\n"
        "folder is only read (--out must lie outside it).",
        "  wavecl prepare mevis-png --root data/mevis --split valid_u --out runs/mevis_png/valid_u\n",
    )
    mevis_png.add_argument("--root", default="data/mevis", help="MeViS folder or its parent (default data/mevis)")
    mevis_png.add_argument(
        "--split", choices=("train", "valid_u"), default="valid_u", help="split with masks (default valid_u)"
    )
    mevis_png.add_argument("--out", required=True, help="output folder (receives Annotations/ and objects.json)")
    mevis_png.set_defaults(handler=prepare_mevis_png)
