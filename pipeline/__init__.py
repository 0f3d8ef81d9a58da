"""avel's pipeline: decoding, feature caches, training and localization (see the README's Layout)."""
