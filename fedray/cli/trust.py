"""`--allow-code`: the user vouching, on this command line, for code a run directory names."""

from __future__ import annotations

import argparse


def add_allow_code(parser: argparse.ArgumentParser) -> None:
    """The repeatable `--allow-code MODULE` option of every command that reads a run directory."""
    parser.add_argument(
        "--allow-code", action="append", default=[], metavar="MODULE",
        help="run the code this module (or one `module:attr`) provides when the run directory's "
             "config names it; fedray never runs code named only in a file it reads back (repeatable)")
