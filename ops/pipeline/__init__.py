"""Pipelines: YAML files of steps with selectors, planned into one reviewable plan file."""
