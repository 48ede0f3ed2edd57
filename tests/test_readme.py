"""The commands the README shows: every ``wavecl`` line parses, ``wavecl info`` runs as written on a
fresh install (no weights anywhere), and the train / resume / evaluate block runs in its tiny variant
(the recipe ``tiny`` on a synthetic dataset instead of A2D)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from wavecl.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
ROBERTA_BASE_PARAMETERS = "124,645,632"  # roberta-base with its pooler, as published


def readme_blocks() -> list[list[str]]:
    """The ``wavecl ...`` commands of each of the README's bash blocks, continuation lines joined,
    comments cut."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        lines = [line.split("  #", 1)[0].strip() for line in block.replace("\\\n", " ").splitlines()]
        blocks.append([line for line in lines if line.startswith("wavecl ")])
    return blocks


def readme_commands() -> list[str]:
    return [command for block in readme_blocks() for command in block]


def test_the_readme_shows_the_commands_of_every_stage() -> None:
    names = {shlex.split(command)[1] for command in readme_commands()}
    assert {"demo", "predict", "info", "train", "evaluate"} <= names


@pytest.mark.parametrize("command", readme_commands())
def test_every_readme_command_parses(command: str) -> None:
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert callable(args.handler)


def test_wavecl_info_runs_as_written_without_any_weights(tmp_path: Path) -> None:
    """``pretrained/roberta-base`` does not exist here: counting parameters needs only the shape."""
    assert not (REPO / "pretrained" / "roberta-base").exists()
    (command,) = [c for c in readme_commands() if c.startswith("wavecl info")]
    result = subprocess.run(
        [sys.executable, "-m", "wavecl", *shlex.split(command)[1:]],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    text_encoder_row = next(line for line in result.stdout.splitlines() if "text_encoder" in line)
    assert ROBERTA_BASE_PARAMETERS in text_encoder_row
    assert "total" in result.stdout


def tiny_variant(command: str, root: Path, runs: Path) -> list[str]:
    """A README command with the tiny model on the synthetic dataset, one short epoch, on the CPU."""
    argv = shlex.split(command)[1:]
    argv = [("tiny" if arg == "a2d_sentences" else arg) for arg in argv]
    if "--data-root" in argv:
        argv[argv.index("--data-root") + 1] = str(root)
    else:
        argv += ["--data-root", str(root)]
    argv = [arg.replace("runs/a2d_sentences/a2d", str(runs / "synthetic" / "tiny")) for arg in argv]
    sizes = {"data.train_short_size": 32, "data.train_max_size": 48, "data.eval_short_size": 32}
    sizes |= {"data.eval_max_size": 48, "data.window_size": 2, "train.max_steps_per_epoch": 1}
    argv += ["--device", "cpu", "--set", f"train.output_dir={runs}"]
    for key, value in sizes.items():
        argv += ["--set", f"{key}={value}"]
    if argv[0] == "train":
        argv += ["--epochs", "1" if "--resume" not in argv else "2"]
    return argv


def test_the_train_resume_evaluate_block_runs_in_its_tiny_variant(tmp_path: Path) -> None:
    root, runs = tmp_path / "synthetic", tmp_path / "runs"
    main(["prepare", "synthetic", "--root", str(root), "--videos", "2", "--valid-videos", "1", "--frames", "2"])
    (block,) = [block for block in readme_blocks() if any(c.startswith("wavecl info") for c in block)]
    block = [command for command in block if not command.startswith("wavecl info")]
    assert [c.split()[1] for c in block] == ["train", "train", "evaluate"], block
    assert "--resume" in block[1]
    for command in block:
        main(tiny_variant(command, root, runs))
    run_dir = runs / "synthetic" / "tiny"
    assert [json.loads(line)["epoch"] for line in (run_dir / "log.jsonl").read_text().splitlines()] == [0, 1]
    assert (run_dir / "evaluation" / "epoch_0001" / "metrics.json").is_file()  # named after the last checkpoint
