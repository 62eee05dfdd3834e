"""Synthetic degradations and paired (clean, degraded) datasets in the Diff-Plugin CSV format."""
