"""Measuring plugins and step orders: datasets, metrics, plugin evaluation, order evidence."""
