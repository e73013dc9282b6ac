"""Errors a user sees: each says what went wrong, where, and what to do."""


class TierlineError(RuntimeError):
    """Base class; the CLI prints these without a traceback."""


class ExtractError(TierlineError):
    """An extract file cannot be read at all (wrong delimiter, truncated, missing column...)."""


class ConfigError(TierlineError):
    """The business-rule configuration is invalid; the message names the key."""


class QualityGateFailed(TierlineError):
    """A blocking quality check failed; nothing of the run is published."""
