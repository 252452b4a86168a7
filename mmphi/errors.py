"""User-facing errors: the CLI prints their message (no traceback) and exits non-zero."""


class MmphiError(RuntimeError):
    """A problem with the user's input, files or environment, explained in the message."""
