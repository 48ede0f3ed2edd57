"""Atomic writes: the file appears whole or not at all, and with the mode of a new file under the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from wavecl.atomic import atomic_path, save_image, temporary_directory, write_json, write_text
from wavecl.checkpoint import save_checkpoint


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def plain_file_mode(folder: Path) -> int:
    """The mode ``open(..., "w")`` gives a new file here: the independent reference."""
    reference = folder / "reference.txt"
    with open(reference, "w") as handle:
        handle.write("x")
    value = mode(reference)
    reference.unlink()
    return value


def test_written_files_get_the_mode_of_a_new_file(tmp_path, umask):
    expected = plain_file_mode(tmp_path)
    assert expected == 0o666 & ~umask
    write_text(tmp_path / "a.txt", "hello")
    write_json(tmp_path / "b.json", {"x": 1})
    save_image(Image.new("RGB", (4, 4)), tmp_path / "c.png", "PNG")
    with atomic_path(tmp_path / "d.safetensors") as temporary:
        save_file({"w": torch.zeros(2)}, str(temporary))  # safetensors replaces the file with a 0600 one
    paths = save_checkpoint(tmp_path / "checkpoints", 0, {"w": torch.zeros(3)}, {"epoch": 0})
    written = [tmp_path / name for name in ("a.txt", "b.json", "c.png", "d.safetensors")]
    written += [paths.model, paths.state, tmp_path / "checkpoints" / "last"]
    assert {path.name: mode(path) for path in written} == {path.name: expected for path in written}
    assert (tmp_path / "a.txt").read_text() == "hello"


def test_temporary_directory_gets_the_mode_of_a_new_folder(tmp_path, umask):
    reference = tmp_path / "reference"
    reference.mkdir()
    folder = temporary_directory(tmp_path / "out" / "target")
    assert folder.parent == tmp_path / "out" and folder.name.startswith(".target.")
    assert mode(folder) == mode(reference) == 0o777 & ~umask


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(tmp_path / "a.txt") as temporary:
            temporary.write_text("half")
            raise RuntimeError("boom")
    assert (tmp_path / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
