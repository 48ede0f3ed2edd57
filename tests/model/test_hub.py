"""Pretrained folders for the Hugging Face Hub: the model card ``save_pretrained`` and ``wavecl export``
write, and ``from_pretrained`` with a repository id, read offline from a cache in the Hub's layout
(nothing is downloaded: ``HF_HUB_OFFLINE=1``)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from support import run_cli

from wavecl.checkpoint import save_checkpoint
from wavecl.config import load_config
from wavecl.inference_settings import InferenceSettings
from wavecl.model.pretrained import save_pretrained
from wavecl.model.wavecl import WaveCL

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def card_parts(folder: Path) -> tuple[dict, str]:
    """The YAML front matter and the body of the model card in ``folder``."""
    text = (folder / "README.md").read_text(encoding="utf-8")
    match = re.fullmatch(r"---\n(.*?)\n---\n(.*)", text, flags=re.S)
    assert match, "the card starts with a YAML front matter"
    return yaml.safe_load(match[1]), match[2]


def table_value(body: str, name: str) -> str:
    """The value of row ``name`` of a two-column Markdown table of the card."""
    (value,) = re.findall(rf"^\| {re.escape(name)} \| (.*) \|$", body, flags=re.M)
    return value


def test_save_pretrained_writes_a_model_card(tiny_model: WaveCL, tmp_path: Path) -> None:
    folder = save_pretrained(tiny_model, tmp_path / "tiny", InferenceSettings(short_size=64, max_size=96, window=4))
    metadata, body = card_parts(folder)
    assert metadata["library_name"] == "wavecl" and metadata["license"] == "mit"
    assert "referring-video-object-segmentation" in metadata["tags"]

    total = sum(parameter.numel() for parameter in tiny_model.parameters())
    trainable = sum(parameter.numel() for parameter in tiny_model.parameters() if parameter.requires_grad)
    assert table_value(body, "parameters") == f"{total:,} ({trainable:,} trainable)"
    assert table_value(body, "object queries") == str(tiny_model.config.num_queries)
    assert f"width {tiny_model.config.d_model}" in table_value(body, "transformer")
    assert table_value(body, "text encoder").startswith(
        f"bert, hidden size {tiny_model.text_encoder.config.hidden_size}"
    )
    assert "short side 64 px, long side at most 96 px, 4 frames per clip" in body
    assert "Not recorded" in body.split("## Training", 1)[1].split("##", 1)[0]
    (config_block,) = re.findall(r"```yaml\n(.*?)```", body, flags=re.S)
    assert yaml.safe_load(config_block) == {"model": json.loads((folder / "config.json").read_text())}
    assert "WaveCL.from_pretrained(" in body and "MIT" in body


def write_run(run: Path, model: WaveCL) -> None:
    """A training run of two epochs in its on-disk layout, with a log whose epochs score differently."""
    run.mkdir()
    (run / "config.yaml").write_text(load_config("tiny").to_yaml())
    info = {"world_size": 2, "torch": torch.__version__, "precision": {"effective": "bf16"}, "git_revision": None}
    (run / "run_info.json").write_text(json.dumps(info))
    records = [
        {"epoch": 0, "train_loss": 3.0, "eval_J": 0.25, "eval_F": 0.5, "eval_J&F": 0.375, "eval_expressions": 9.0},
        {"epoch": 1, "train_loss": 2.0, "eval_J": 0.5, "eval_F": 0.75, "eval_J&F": 0.625, "eval_expressions": 9.0},
    ]
    (run / "log.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    for epoch in (0, 1):
        save_checkpoint(run / "checkpoints", epoch, model.state_dict(), {"epoch": epoch})


def test_export_puts_the_runs_data_settings_and_scores_in_the_card(tiny_model: WaveCL, tmp_path: Path, capsys) -> None:
    write_run(tmp_path / "run", tiny_model)
    code, _, err = run_cli(
        ["export", str(tmp_path / "run" / "checkpoints" / "epoch_0000"), str(tmp_path / "a")], capsys
    )
    assert code == 0, err
    code, _, err = run_cli(["export", str(tmp_path / "run"), str(tmp_path / "b")], capsys)  # last: epoch 1
    assert code == 0, err
    config = load_config("tiny")
    for folder, checkpoint, scores in (
        ("a", "epoch_0000", (0.25, 0.5, 0.375)),
        ("b", "epoch_0001", (0.5, 0.75, 0.625)),
    ):
        _, body = card_parts(tmp_path / folder)
        assert table_value(body, "checkpoint") == f"`{checkpoint}`"
        assert table_value(body, "epochs trained") == str(int(checkpoint[-1]) + 1)
        assert table_value(body, "data.dataset_name") == f"`{config.data.dataset_name}`"
        assert table_value(body, "train.lr") == f"`{config.train.lr}`"
        assert table_value(body, "data.window_size") == f"`{config.data.window_size}`"
        assert (table_value(body, "processes"), table_value(body, "precision")) == ("2", "bf16")
        assert [table_value(body, name) for name in ("J", "F", "J&F")] == [f"{score:.4f}" for score in scores]
        assert "| expressions |" not in body, "counts are not scores"


def cache_repository(cache: Path, repository_id: str, folder: Path) -> None:
    """Put ``folder`` in ``cache`` as the Hub's client stores a download: files in ``blobs/`` named by their
    SHA-256, linked from ``snapshots/<commit>/``, and ``refs/main`` naming the commit."""
    storage = cache / f"models--{repository_id.replace('/', '--')}"
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(COMMIT)
    (storage / "blobs").mkdir()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            content = path.read_bytes()
            blob = storage / "blobs" / hashlib.sha256(content).hexdigest()
            blob.write_bytes(content)
            link = storage / "snapshots" / COMMIT / path.relative_to(folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))


HUB_PROBE = """
import json, sys, torch
from wavecl import WaveCL

hub, local = WaveCL.from_pretrained(sys.argv[1]), WaveCL.from_pretrained(sys.argv[2])
same = hub.state_dict().keys() == local.state_dict().keys() and all(
    torch.equal(tensor, local.state_dict()[name]) for name, tensor in hub.state_dict().items())
errors = {}
for missing in ("someone/not-cached", sys.argv[2] + "/missing"):
    try:
        WaveCL.from_pretrained(missing)
    except FileNotFoundError as error:
        errors[missing] = str(error)
print(json.dumps({"same": same, "config": hub.config == local.config, "errors": errors}))
"""


def test_from_pretrained_takes_a_hub_repository_id_offline(tiny_model: WaveCL, tmp_path: Path) -> None:
    folder = save_pretrained(tiny_model, tmp_path / "tiny", InferenceSettings(short_size=64, max_size=96))
    cache_repository(tmp_path / "hub", "someone/wavecl-tiny", folder)
    environment = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    command = [sys.executable, "-c", HUB_PROBE, "someone/wavecl-tiny", str(folder)]
    result = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["same"] and outcome["config"]
    not_cached = outcome["errors"]["someone/not-cached"]
    assert "someone/not-cached" in not_cached and "Hugging Face Hub" in not_cached
    assert outcome["errors"][str(folder / "missing")] == f"checkpoint not found: {folder / 'missing'}"


@pytest.mark.parametrize(
    ("path", "is_id"),
    [("owner/name", True), ("owner/wavecl-a2d.v1", True), ("a/b/c", False), ("../name", False), ("name", False)],
)
def test_what_is_spelt_like_a_repository_id(path: str, is_id: bool) -> None:
    from wavecl.model.hub import is_repository_id

    assert is_repository_id(path) is is_id
