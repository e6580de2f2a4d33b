"""Data on disk and in memory: image files, pairs, HDF5 stores, datasets, augmentation, landmarks."""
