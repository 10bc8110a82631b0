"""
Configuration errors: L{ConfigError} carries every problem found in one
file, each located by its key path, so an operator fixes a file in one
pass rather than one error per restart.  The list and each message are
bounded and secrets are redacted before anything is shown (a file can be
as long, and hold as much, as its author likes).
"""

from typing import Sequence

from ..common.redaction import redact_text

#: At most this many problems are listed (a file can hold thousands).
MAX_PROBLEMS_SHOWN = 50
#: A problem longer than this is cut (a message stays readable).
MAX_PROBLEM_CHARS = 400


class ConfigError(Exception):
    """
    A configuration file is unusable.

    @ivar problems: one message per problem, each starting with its key path
        (C{transports[0].type: 'tcpp' is not one of ...}).
    @ivar source: the file (or other source) it came from.
    """

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} problem(s):"]
        for problem in self.problems[:MAX_PROBLEMS_SHOWN]:
            if len(problem) > MAX_PROBLEM_CHARS:
                problem = problem[:MAX_PROBLEM_CHARS - 1] + "\u2026"
            lines.append(f"  - {redact_text(problem)}")
        if len(self.problems) > MAX_PROBLEMS_SHOWN:
            lines.append(f"  ... and {len(self.problems) - MAX_PROBLEMS_SHOWN} more")
        return "\n".join(lines)
