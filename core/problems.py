"""Problems found in user files, each with the place it was found: `file:line:col`."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One error or warning about a place in a file (line and column count from 1)."""

    file: str
    line: int
    col: int
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.severity}: {self.message}"

    def as_dict(self) -> dict:
        """The problem as the JSON object `check --json` prints."""
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "severity": self.severity,
            "message": self.message,
        }


class ProblemError(Exception):
    """Raised when a file cannot be used; carries every problem found in it."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def errors(self) -> list[Problem]:
        """Only the problems that are errors, not warnings."""
        return [p for p in self.problems if p.severity == "error"]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ` (did you mean 'x'?)` suffix for a misspelt name, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def counted(number: int, noun: str) -> str:
    """`1 file`, `2 files`: a count with its noun in the form that reads right."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def shown_path(file: str) -> str:
    """A problem's file as the user would type it: relative to the working folder when inside it."""
    path = os.path.abspath(file)
    here = os.getcwd()
    if os.path.commonpath([path, here]) != here:
        return path
    return os.path.relpath(path, here)
