"""
Configuration errors: every problem of a file, each located by key path.
"""

from typing import Sequence


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
        lines.extend(f"  - {p}" for p in self.problems)
        return "\n".join(lines)
