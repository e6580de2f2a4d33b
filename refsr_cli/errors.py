"""The one exception type that the CLI turns into a clean one-line error."""


class RefsrError(Exception):
    """A user-facing failure: bad input, a missing file, an impossible request.

    The CLI prints ``refsr: error: <message>`` on stderr and exits 1, never a traceback. Messages
    should name the file (or pair) and the problem in one line.
    """
