"""mixbench: paired multimodal datasets → mixed-modal benchmarks → DM2C clustering.

The work is done by four stage packages that talk only through stores (see ``mixbench.store``):
``prep`` (raw data → paired store), ``embed`` (encoders + PCA to a shared dimension),
``unpair`` (break a ratio of the training pairs) and ``train`` (DM2C and baselines).
This package holds what they share: configuration, errors, lineage, the recipe runner
and the command line.
"""

__version__ = "0.1.0"

import os as _os
import sys as _sys

PORTABLE_MATH = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default"}
"""``MIXBENCH_PORTABLE_MATH=1``: the same numbers for a seed on any x86-64 CPU. MKL's conditional
numerical reproducibility mode (``MKL_CBWR=COMPATIBLE``: the same matrix-multiply kernels on every
CPU) and torch's own CPU kernels without AVX2/AVX-512 (``ATEN_CPU_CAPABILITY=default``). Both are
read when torch loads, so the switch is applied here, when mixbench is imported first (the CLI and
the stage packages do); values already set in the environment are kept. It costs time: see the
README's reproducibility note."""

if _os.environ.get("MIXBENCH_PORTABLE_MATH", "") not in ("", "0"):
    if "torch" in _sys.modules:
        import warnings as _warnings

        _warnings.warn("MIXBENCH_PORTABLE_MATH is set but torch was imported before mixbench: set MKL_CBWR=COMPATIBLE "
                       "and ATEN_CPU_CAPABILITY=default in the environment instead.", RuntimeWarning, stacklevel=2)
    for _k, _v in PORTABLE_MATH.items():
        _os.environ.setdefault(_k, _v)
