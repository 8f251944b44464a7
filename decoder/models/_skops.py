"""Reading the package's skops model files: what types a file holds, before trusting any.

Both kinds of saved model (biomarker and category) are read the same way: list the
types skops would not load by default, refuse the file unless every one is on the
model kind's allow-list, then load with exactly those trusted. Never pickle.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError


def untrusted_types(path) -> list:
    """The types in the skops file ``path`` that skops does not trust by default.

    Raises
    ------
    DataError
        When ``path`` is not a skops file (a one-line error naming it).
    """
    import skops.io as sio
    try:
        return list(sio.get_untrusted_types(file=str(path)))
    except Exception as exc:
        raise DataError(f"{path}: not a skops model file ({type(exc).__name__})",
                        "pass a model.skops written by 'decoder run'") from None


def not_allowed(untrusted, allowed) -> list:
    """The types of ``untrusted`` that are not in ``allowed``, in file order."""
    return [t for t in untrusted if t not in allowed]


def load_trusting(path, untrusted) -> object:
    """Load ``path`` trusting exactly ``untrusted`` (checked against an allow-list first)."""
    import skops.io as sio
    return sio.load(str(Path(path)), trusted=list(untrusted))
