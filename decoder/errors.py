"""One exception type for every user-facing failure.

Every error the library raises for bad input is a :class:`DecoderError`
carrying *what* went wrong (naming the file or key) and *how to fix it*.
The CLI prints ``str(err)`` as a single line and exits non-zero.
"""

from __future__ import annotations


class DecoderError(Exception):
    """A user-facing error: a problem and its fix, printed on one line.

    Parameters
    ----------
    message : str
        What went wrong, naming the file, key or value concerned.
    fix : str, optional
        What the user can do about it.
    """

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.message = " ".join(str(message).split())
        self.fix = " ".join(str(fix).split()) if fix else None

    def __str__(self) -> str:
        if self.fix:
            return f"{self.message} — fix: {self.fix}"
        return self.message


class ConfigError(DecoderError):
    """An invalid configuration key or value."""


class DataError(DecoderError):
    """Unreadable, inconsistent or missing input data."""


class LabelError(DataError, ValueError):
    """Labels a classifier cannot learn from (one class, or a count it does not take).

    Also a :class:`ValueError`, as scikit-learn's estimator contract asks of a
    classifier given such labels, so that scikit-learn tools handle it as theirs.
    """


def link_loop_error(err: BaseException) -> DataError | None:
    """The one-line error for a path that is a loop of symbolic links, from the
    exception the standard library raised on it (``Path.resolve`` raises a bare
    ``RuntimeError`` in Python 3.11, ``open`` an ``OSError`` with ``ELOOP``); None for any
    other exception."""
    import errno
    path = None
    if isinstance(err, RuntimeError) and str(err).startswith("Symlink loop from "):
        path = str(err)[len("Symlink loop from "):].strip("'\"")
    elif isinstance(err, OSError) and err.errno == errno.ELOOP:
        path = err.filename
    if path is None:
        return None
    return DataError(f"{path} is a loop of symbolic links: it leads to no file",
                     "point the link at the file, or give the file itself")


def check_choice(what: str, value, options, fix_word: str = "one") -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``options``.

    The message names the setting and the value (``"model 'x' is not
    supported — fix: use one of: ridge, logistic"``).
    """
    if value not in options:
        raise ConfigError(f"{what} '{value}' is not supported",
                          f"use {fix_word} of: {', '.join(options)}")


def missing_file(path, what: str, fix: str) -> DataError:
    """The error for an input file that is not there: ``"<what> not found: <path>"``, or,
    for a DataLad/git-annex file whose content was never fetched (a link into the annex
    that leads nowhere), a message saying so with the command that gets it."""
    import os
    from pathlib import Path
    path = Path(path)
    if path.is_symlink() and not path.exists() and ".git/annex/objects" in \
            os.readlink(path).replace("\\", "/"):
        return DataError(f"{what} {path} is an annexed file whose content is not here",
                         f"run 'datalad get {path}' (or 'decoder fetch' its dataset), "
                         "then retry")
    if path.is_dir():
        return DataError(f"{what} {path} is a folder, not a file", fix)
    if path.is_symlink() and not path.exists():  # a dangling link or a loop of links
        target = path.parent / os.readlink(path)   # a relative target is from the link's folder
        return DataError(f"{what} {path} is a link to {target}, which leads to no "
                         "file (a broken link, or a loop of links)",
                         "point the link at the file, or give the file itself")
    return DataError(f"{what} not found: {path}", fix)
