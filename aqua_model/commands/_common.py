"""Small helpers shared by the subcommands: the parser class (one-line errors), convention
options, JSON output, output-path checks, error messages that name the flags."""

from __future__ import annotations

import argparse
import codecs
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from ..costs.convention import KEY_PROJECTION_MODELS, PROJECTION_PLACEMENTS, SELECTION_MODELS, Convention

JSON_SCHEMA_VERSION = 1
#: Exit status of a bad argument (argparse's own), and of a failure while running.
EXIT_USAGE = 2
EXIT_FAILURE = 1


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``prog: error: message``), not the usage
    block followed by the error; subparsers inherit it. A flag must be spelled in full
    (``allow_abbrev=False``): ``--cont`` is an error, never a silent ``--context``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


#: A plain integer on the command line: ASCII digits, optionally after a '-' (so that a range
#: error can name a negative value); no '+', '_', spaces or other scripts' digits.
_PLAIN_INT = re.compile(r"-?[0-9]+")
#: A plain decimal number: digits with an optional fraction and exponent, in ASCII.
_PLAIN_REAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def integer(text: str) -> int:
    """argparse ``type`` of an integer flag: plain ASCII digits only. Python's ``int`` also takes
    '1_024', '+64', ' 64' and Arabic-Indic digits, none of which a user means as a size."""
    if not isinstance(text, str) or not _PLAIN_INT.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be a plain integer (ASCII digits 0-9), got {text!r}")
    return int(text)


def real(text: str) -> float:
    """argparse ``type`` of a number flag: a finite decimal in ASCII (no nan, inf, '_', '+' or spaces)."""
    if not isinstance(text, str) or not _PLAIN_REAL.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be a finite decimal number (e.g. 1.5 or 2e-3), got {text!r}")
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def add_convention_args(parser: argparse.ArgumentParser) -> None:
    """The convention fields as options (defaults are the documented Convention defaults)."""
    c = Convention()
    parser.add_argument(
        "--topk-cost",
        choices=SELECTION_MODELS,
        default=c.selection,
        help="convention: cost model of the top-k selection (default: %(default)s)",
    )
    parser.add_argument(
        "--key-projection",
        choices=KEY_PROJECTION_MODELS,
        default=c.key_projection,
        help="convention: each new key rotated once and cached ('shared') or every key every step (default: %(default)s)",
    )
    parser.add_argument(
        "--projection",
        choices=PROJECTION_PLACEMENTS,
        default=c.projection,
        help="convention: P applied at run time ('online') or folded into W_Q, W_K (default: %(default)s)",
    )
    parser.add_argument(
        "--softmax-flops",
        type=real,
        default=c.softmax_flops_per_score,
        help="convention: FLOPs per score in softmax (default: %(default)s)",
    )


#: Convention fields named by the options of :func:`add_convention_args`.
CONVENTION_FLAGS: Mapping[str, str] = {"softmax_flops_per_score": "--softmax-flops"}


def convention_from(args: argparse.Namespace) -> Convention:
    """Build the Convention the options describe."""
    return Convention(
        selection=args.topk_cost,
        key_projection=args.key_projection,
        projection=args.projection,
        softmax_flops_per_score=args.softmax_flops,
    )


def print_json(payload: dict[str, Any]) -> None:
    """Print a JSON document that carries the CLI schema version."""
    print(json.dumps({"schema_version": JSON_SCHEMA_VERSION, **payload}, indent=2, default=float))


# -- output paths ----------------------------------------------------------------------------------


def _first_existing(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
    return Path(".")  # pragma: no cover - the root always exists


def _check_not_empty(flag: str, path: str | os.PathLike[str]) -> None:
    if not str(path).strip():  # Path("") is Path("."): the working directory, never what was meant
        raise ValueError(f"{flag} must name a path, got {str(path)!r}")


def _probe_folder(flag: str, path: str | os.PathLike[str], folder: Path) -> None:
    """Write a scratch file in the nearest existing folder of ``folder`` (creating nothing), so that
    an output that cannot be written is refused before any work: ``os.access`` says yes to root,
    even on /proc."""
    existing = _first_existing(folder)
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ValueError(
            f"{flag} {str(path)!r} cannot be written: {exc.strerror or exc} in {str(existing)!r}"
        ) from None


def check_output_file(flag: str, path: str | os.PathLike[str]) -> Path:
    """``path`` as a file this command may write (its folders created if missing), or
    ValueError naming ``flag``: it must not be empty or a folder, and nothing above it may be a file."""
    _check_not_empty(flag, path)
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a folder; give the path of a file to write")
    blocker = _first_existing(p.parent)
    if not blocker.is_dir():
        raise ValueError(f"{flag} {str(path)!r} cannot be written: {str(blocker)!r} is a file, not a folder")
    if not os.access(blocker, os.W_OK):
        raise ValueError(f"{flag} {str(path)!r} cannot be written: folder {str(blocker)!r} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise ValueError(f"{flag} {str(path)!r} cannot be written: the file is not writable")
    if p.exists() and not p.is_file():
        raise ValueError(f"{flag} {str(path)!r} is not a regular file")
    _probe_folder(flag, path, p.parent)
    return p


def check_output_dir(flag: str, path: str | os.PathLike[str]) -> Path:
    """``path`` as a folder this command may write into (created if missing), or ValueError
    naming ``flag``: it must not be empty or a file, and nothing above it may be a file."""
    _check_not_empty(flag, path)
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a file; give a folder")
    blocker = _first_existing(p)
    if not blocker.is_dir():
        raise ValueError(f"{flag} {str(path)!r} cannot be created: {str(blocker)!r} is a file, not a folder")
    if not os.access(blocker, os.W_OK):
        raise ValueError(f"{flag} {str(path)!r} cannot be written: folder {str(blocker)!r} is not writable")
    _probe_folder(flag, path, p)
    return p


def check_input_file(flag: str, path: str | os.PathLike[str]) -> Path:
    """``path`` as an existing, readable file, or ValueError naming ``flag``."""
    _check_not_empty(flag, path)
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a folder; give the path of a file")
    if not p.is_file():
        raise ValueError(f"{flag} {str(path)!r} does not exist")
    if not os.access(p, os.R_OK):
        raise ValueError(f"{flag} {str(path)!r} is not readable")
    _check_utf8(flag, path, p)
    return p


def _check_utf8(flag: str, path: str | os.PathLike[str], p: Path) -> None:
    """Every input file of the commands is text (TOML, JSON, JSONL): a binary one is named here,
    not later as a bare UnicodeDecodeError."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with p.open("rb") as fh:
        try:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"{flag} {str(path)!r} is not UTF-8 text (a binary file?): {exc.reason}"
            ) from None


# -- errors that name the flags ---------------------------------------------------------------------


def flag_names(parser: argparse.ArgumentParser, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Python argument name -> command-line flag: every option's destination (``heads_q`` ->
    ``--heads-q``) plus ``extra`` for API arguments whose name differs from their flag
    (``k_t`` -> ``--tokens``)."""
    names: dict[str, str] = {}
    for action in parser._actions:  # noqa: SLF001 - argparse has no public accessor
        longs = [s for s in action.option_strings if s.startswith("--")]
        if longs and action.dest not in ("help", "version"):
            names[action.dest] = longs[0]
    names.update(CONVENTION_FLAGS)
    names.update(extra or {})
    return names


def name_flags(message: str, names: Mapping[str, str]) -> str:
    """``message`` with the Python argument names replaced by their flags.

    A name that is spelled differently from its flag (``k_t``, ``heads_q``, ``p``) is replaced
    wherever it stands as a word; a plain word that is also its flag (``context``, ``batch``) only
    where it opens the message, so that prose ("batch and context as given") stays readable.
    """
    for name, flag in sorted(names.items(), key=lambda kv: -len(kv[0])):
        plain = flag == f"--{name}" and "_" not in name
        word = re.escape(name)
        pattern = rf"^{word}(?=[\s=(:,])" if plain else rf"(?<![\w./-]){word}(?![\w/-])"
        message = re.sub(pattern, flag, message)
    return message


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run the chosen subcommand. Bad arguments exit 2 with a one-line
    message that names the flag, never a traceback; an I/O failure while running exits 1 with
    one line; a closed output pipe ends quietly."""
    args = parser.parse_args(argv)
    where = f"aqua-model {args.command}"
    if sys.stdout is None:  # started with standard output closed (e.g. `>&-`): print() would drop it all
        print(f"{where}: error: standard output is closed, so nothing could be printed", file=sys.stderr)
        return EXIT_FAILURE
    try:
        code = int(args.run(args) or 0)
        sys.stdout.flush()  # a full or failing output (e.g. /dev/full) is an error, not exit 0
        return code
    except BrokenPipeError:  # output piped into a command that stopped reading (e.g. head)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    except (ValueError, TypeError, FileNotFoundError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        message = name_flags(str(message), getattr(args, "flag_names", {}) or {})
        print(f"{where}: error: {_one_line(message)}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, MemoryError, OverflowError) as exc:
        print(f"{where}: error: {_one_line(f'{type(exc).__name__}: {exc}')}", file=sys.stderr)
        return EXIT_FAILURE


def _one_line(text: str) -> str:
    """``text`` on one line: newlines become spaces, and any other character a terminal or
    ``str.splitlines`` could break on (or not show) is written as its escape, e.g. ``\\x1e``."""
    joined = " ".join(str(text).split("\n")).strip()
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in joined)


def set_run(parser: argparse.ArgumentParser, run: Any, extra_flags: Mapping[str, str] | None = None) -> None:
    """Make ``run`` the parser's action, with the flag names its errors are rewritten with
    (call it after every option is added)."""
    parser.set_defaults(run=run, flag_names=flag_names(parser, extra_flags))
