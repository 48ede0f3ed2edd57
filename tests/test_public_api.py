"""``from wavecl import ...``: every public name resolves to the object its module defines."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import wavecl


@pytest.mark.parametrize("name", sorted(wavecl._EXPORTS))
def test_public_name_is_the_module_object(name: str) -> None:
    assert getattr(wavecl, name) is getattr(importlib.import_module(wavecl._EXPORTS[name]), name)
    assert name in wavecl.__all__ and name in dir(wavecl)


def test_all_lists_exactly_the_exports() -> None:
    assert set(wavecl.__all__) == {*wavecl._EXPORTS, "__version__"}


def test_unknown_name_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        wavecl.NoSuchThing  # noqa: B018


def test_import_wavecl_does_not_load_torch() -> None:
    """``wavecl --help`` and ``import wavecl`` stay fast: torch loads only when a model name is used."""
    code = "import sys, wavecl; print('torch' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "False"
