"""VBench-compatible scoring."""
