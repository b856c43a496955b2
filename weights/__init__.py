"""Maintainer tools for the published weights (not shipped in the wheel)."""
