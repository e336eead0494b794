"""One training loop with pluggable objectives."""
