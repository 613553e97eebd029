"""The store: the one format every stage reads and writes (README: the store format).

A store is a folder of HDF5 shards (``{split}-{k:05d}.h5``, one group per modality) completed by a
``manifest.json`` written last. Every stage and the train checkpoints use it, so it lives here, in
the shared package, not in any one stage:

- :mod:`mixbench.store.shards` — ``Store`` (verified reader), ``StoreWriter`` (atomic shards, resume
  markers, manifest), column schemas;
- :mod:`mixbench.store.manifest` — checksums, atomic writes, run keys, lineage entries, versions;
- :mod:`mixbench.store.inspect` — the ``mixbench inspect`` summary and checksum verification;
- :mod:`mixbench.store.export` — exporters to other tools' formats (DM2C ``.mat``, DADH, npz).
"""

from .shards import Column, Store, StoreWriter, base_schema, feature_schema

__all__ = ["Column", "Store", "StoreWriter", "base_schema", "feature_schema"]
