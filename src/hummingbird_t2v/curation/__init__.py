"""Data curation: probe, quality, motion and re-caption stages; local and Ray engines."""
