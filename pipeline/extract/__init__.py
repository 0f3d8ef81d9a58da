"""Stage one's wiring: the extractors behind one FeatureExtractor, the feature stream, the local engine and the Ray engine."""
