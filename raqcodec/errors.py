"""The one exception type raqcodec raises for bad input."""


class CodecError(ValueError):
    """A bad input: a corrupt or foreign .raq file, an unreadable image, an impossible rate target.

    The message is one line, fit to show a user as is.
    """
