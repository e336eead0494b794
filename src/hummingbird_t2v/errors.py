"""Errors a user can fix. Their message names the problem and the fix; the CLI prints it as one line."""


class HummingbirdError(Exception):
    """Base class of every error caused by user input (prompts, sizes, files, configs, devices)."""


class ConfigError(HummingbirdError, ValueError):
    """An invalid argument or configuration value."""


class CheckpointError(HummingbirdError):
    """A weights file that is missing, corrupt, or does not fit the chosen model."""
