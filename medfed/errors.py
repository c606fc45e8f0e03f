"""Errors and problem records shared by every part of medfed.

A *problem* is one thing wrong with one case of one site (or with a config); validation collects
all of them before anything is reported, so a user fixes a site in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One defect in a site's data: where it is and why it is wrong.

    ``case`` is the hashed case id (or the source's own subject/folder name when the defect is in
    the layout itself and no case exists yet); never a patient identifier from file contents.
    ``severity`` is ``"error"`` (the data cannot be used as it is: ``medfed validate`` exits 1) or
    ``"warning"`` (worth a look, e.g. a near-duplicate image; reported, never blocking).
    """

    site: str
    reason: str
    case: str | None = None
    file: str | None = None
    severity: str = "error"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        where = [] if self.is_error else ["warning"]
        where.append(f"site {self.site}")
        if self.case:
            where.append(f"case {self.case}")
        if self.file:
            where.append(f"file {self.file}")
        return f"{', '.join(where)}: {self.reason}"


class MedfedError(Exception):
    """Base class for errors medfed reports to a user as a message, not a traceback."""


class ConfigError(MedfedError):
    """A config file is missing, unparsable or has an invalid field (message names file and field)."""


def warning(site: str, reason: str, case: str | None = None, file: str | None = None) -> Problem:
    """A :class:`Problem` of severity ``"warning"``."""
    return Problem(site=site, reason=reason, case=case, file=file, severity="warning")


def errors_only(problems: list[Problem]) -> list[Problem]:
    """The problems that block use of the data (severity ``"error"``)."""
    return [p for p in problems if p.is_error]


class DataProblems(MedfedError):
    """A site or federation has data problems; ``problems`` lists every one of them."""

    def __init__(self, problems: list[Problem], context: str = "data") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in {context}:\n{lines}")


def describe_path(path: Path | str, root: Path | str | None = None) -> str:
    """A path for messages: relative to ``root`` when it lies below it, else as given."""
    path = Path(path)
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return str(path)
