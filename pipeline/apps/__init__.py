"""The applications: the predictor, localization and its outputs, CML queries, timelines, the HTML report and the demo."""
