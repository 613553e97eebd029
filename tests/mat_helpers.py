"""Writing MATLAB files in tests (imported by the prep test modules)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def write_mat_v73(path: Path, variables: dict[str, np.ndarray]) -> None:
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 with a 512-byte header, arrays stored transposed."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for k, v in variables.items():
            ds = f.create_dataset(k, data=np.asarray(v).T)
            ds.attrs["MATLAB_class"] = np.bytes_("uint8" if v.dtype == np.uint8 else "double")
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .".ljust(128))


def write_multiview_mat(path: Path, views: list[np.ndarray], labels: np.ndarray, *, v73: bool,
                        cell_name: str = "X", label_name: str = "y") -> None:
    """The common multi-view layout: a 1 × V cell array of views (row i of every view = sample i) and a
    label column vector, as MATLAB writes it (v5 through scipy; v7.3 as HDF5 with the cells as object
    references into ``#refs#``)."""
    labels = np.asarray(labels, dtype=np.float64).reshape(-1, 1)
    if not v73:
        import scipy.io

        cells = np.empty((1, len(views)), dtype=object)
        for i, v in enumerate(views):
            cells[0, i] = np.asarray(v, dtype=np.float64)
        scipy.io.savemat(path, {cell_name: cells, label_name: labels})
        return
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        ref_array = np.empty((len(views), 1), dtype=h5py.ref_dtype)  # MATLAB 1 × V, stored reversed
        for i, v in enumerate(views):
            ds = refs.create_dataset(f"v{i}", data=np.asarray(v, dtype=np.float64).T)
            ds.attrs["MATLAB_class"] = np.bytes_("double")
            ref_array[i, 0] = ds.ref
        cell = f.create_dataset(cell_name, data=ref_array, dtype=h5py.ref_dtype)
        cell.attrs["MATLAB_class"] = np.bytes_("cell")
        lab = f.create_dataset(label_name, data=labels.T)
        lab.attrs["MATLAB_class"] = np.bytes_("double")
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .".ljust(128))
