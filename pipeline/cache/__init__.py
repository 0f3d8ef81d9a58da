"""The HDF5 feature cache: keys, metadata, the part writer, the store, merging and the write lock."""
