"""The foundation: errors, typed configs, the registry, weight files, sampling, the annotation records and atomic file writes. Imports nothing of avel above it."""
