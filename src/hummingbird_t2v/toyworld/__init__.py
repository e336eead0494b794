"""A procedural text-video world small enough to run the whole recipe on a CPU."""
