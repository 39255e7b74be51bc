"""The one exception type for problems the user can fix (bad input, bad config, bad files)."""


class UserError(ValueError):
    """Raised with a one-line message naming the input and the problem.

    The CLI prints it as ``error: <message>`` and exits with code 2, without a traceback.
    """
