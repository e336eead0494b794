"""Checkpoint file formats, safe unpickling, key converters, hub resolution."""
