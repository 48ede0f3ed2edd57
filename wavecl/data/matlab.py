"""MATLAB files of the datasets, read with errors that name the file.

MATLAB writes ``.mat`` files in two families: v5 (also v4, v6 and v7), read with ``scipy.io.loadmat``,
and v7.3, an HDF5 file (after a 512-byte header) that scipy refuses and h5py reads. MATLAB stores
arrays column-major, so h5py sees the axes of a v7.3 array in reverse order: an ``[H, W, T]`` MATLAB
array is an HDF5 dataset of shape ``[T, W, H]``. :func:`read_mat_variable` returns MATLAB's order for
both families; :func:`open_hdf5` and :func:`read_hdf5_dataset` give the raw HDF5 view (A2D's mask files).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import scipy.io

from wavecl.data.paths import require_file


def open_hdf5(path: Path) -> h5py.File:
    """Open an HDF5 file (MATLAB v7.3 included) for reading.

    Raises:
        FileNotFoundError / ValueError naming the file when it is missing or not HDF5.
    """
    require_file(path)
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"cannot read HDF5 file {path}: {error}") from error


def read_hdf5_dataset(handle: h5py.File, name: str, path: Path) -> np.ndarray:
    """Dataset ``name`` of an open HDF5 file, in HDF5 axis order (the reverse of MATLAB's).

    Raises:
        ValueError naming ``path`` when the dataset is missing, not an array or unreadable.
    """
    if name not in handle:
        raise ValueError(f"{path}: missing HDF5 dataset {name!r}")
    if not isinstance(handle[name], h5py.Dataset):
        raise ValueError(f"{path}: {name!r} is not an array (MATLAB struct or cell?)")
    try:
        return np.asarray(handle[name][()])
    except (OSError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: cannot read HDF5 dataset {name!r}: {error}") from error


def read_mat_variable(path: Path, name: str) -> np.ndarray:
    """Variable ``name`` of a MATLAB ``.mat`` file of any version, with MATLAB's axis order.

    Args:
        path: the file; v7.3 files are recognised by their HDF5 signature.
        name: the variable.

    Returns:
        The array as MATLAB shows it (``[H, W, T]`` stays ``[H, W, T]``).

    Raises:
        FileNotFoundError / ValueError naming the file when it is missing, unreadable or lacks ``name``.
    """
    require_file(path)
    if h5py.is_hdf5(path):
        with open_hdf5(path) as handle:
            return read_hdf5_dataset(handle, name, path).T
    try:
        content = scipy.io.loadmat(str(path), variable_names=[name])
    except (NotImplementedError, ValueError, TypeError, OSError, IndexError) as error:
        # MatReadError is a ValueError; IndexError and TypeError come from short or garbled files
        raise ValueError(f"cannot read MATLAB file {path}: {error}") from error
    if name not in content:
        raise ValueError(f"{path}: no variable {name!r}")
    return np.asarray(content[name])
