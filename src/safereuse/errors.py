"""One error type for everything a user can get wrong.

The CLI turns a :class:`SafeReuseError` into a single line ``error: <problem> (fix: <hint>)`` and a
non-zero exit code, never a traceback.
"""

from __future__ import annotations


class SafeReuseError(Exception):
    """A problem with the user's input, data or files, with a hint on how to fix it.

    Args:
        problem: what is wrong, in one sentence.
        fix: what the user should do about it.

    Example:
        >>> raise SafeReuseError("dataset 'foo' is unknown", fix="run `safereuse list datasets`")
        Traceback (most recent call last):
        ...
        safereuse.errors.SafeReuseError: dataset 'foo' is unknown (fix: run `safereuse list datasets`)
    """

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem} (fix: {fix})")

    def one_line(self) -> str:
        return " ".join(str(self).split())
