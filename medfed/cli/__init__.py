"""The ``medfed`` command: ``synth``, ``validate``, ``run``, ``pretrain``, ``report``, ``predict``, ``score``,
``classify-reports``, ``evaluate-reports``, ``flower-certs``, ``nnunet``.

Bad input ends in a message naming the file, case and reason and a non-zero exit code, never a
traceback: exit 1 for data problems, 2 for config/usage errors.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from medfed.cli.arguments import build_parser
from medfed.cli.commands import EXIT_PROBLEMS, EXIT_USAGE, _print_problems
from medfed.errors import ConfigError, DataProblems, MedfedError


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (argparse's usage errors too: 2, message printed)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # usage errors (2), --help and --version (0)
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    try:
        return args.func(args)
    except DataProblems as err:
        _print_problems(err.problems, "data problems")
        return EXIT_PROBLEMS
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except MedfedError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_PROBLEMS
    except OSError as err:  # a file or folder that cannot be read or written; the message names it
        print(f"error: {err}", file=sys.stderr)
        return EXIT_PROBLEMS
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


__all__ = ["EXIT_PROBLEMS", "EXIT_USAGE", "build_parser", "main"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
