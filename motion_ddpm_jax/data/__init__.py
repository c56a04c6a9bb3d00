"""Readers of raw motion formats, dataset preparation and the input pipeline."""
