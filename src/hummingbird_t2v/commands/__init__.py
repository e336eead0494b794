"""Sub-commands of the `hummingbird` CLI: argument parsing and user-facing messages only."""
