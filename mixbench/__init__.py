"""mixbench: paired multimodal datasets → mixed-modal benchmarks → DM2C clustering.

The work is done by four stage packages that talk only through stores (see ``mixbench.store``):
``prep`` (raw data → paired store), ``embed`` (encoders + PCA to a shared dimension),
``unpair`` (break a ratio of the training pairs) and ``train`` (DM2C and baselines).
This package holds what they share: configuration, errors, lineage, the recipe runner
and the command line.
"""

__version__ = "0.1.0"
