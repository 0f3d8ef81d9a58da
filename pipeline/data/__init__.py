"""Labelled features: the AVE release layout, loading a cache or a layout as tensors, generated feature sets."""
