"""The one exception type for problems the user can fix (bad input, bad config, bad files),
and first_line, for reporting another library's long error in one line."""


class UserError(ValueError):
    """Raised with a one-line message naming the input and the problem.

    The CLI prints it as ``error: <message>`` and exits with code 2, without a traceback.
    """


def first_line(e: BaseException) -> str:
    """e's message up to its first line break (its type's name if it has none): what
    torch.compile's errors, a page each, say in one line."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
