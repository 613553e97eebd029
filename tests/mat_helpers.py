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
