"""Pictures as files: matplotlib on its file-only backend (Agg: no display needed), imported when
a picture is drawn, so that runs and reports that draw none do not pay for importing it."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """`matplotlib.pyplot`, on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path, pad: float = 1.08) -> Path:
    """Lay the figure out (`tight_layout`'s padding, in font sizes; 1.08 is matplotlib's default),
    write it to `path` (its folder made if missing) and close it."""
    fig.tight_layout(pad=pad)
    path.parent.mkdir(parents=True, exist_ok=True)
    # written beside it and renamed: a full disk or a kill leaves the old picture or none, never half of one
    partial = path.with_name(f".{path.name}.partial")
    try:
        fig.savefig(partial, format=path.suffix.lstrip(".") or "png")
        partial.replace(path)
    except OSError as err:  # matplotlib's error does not say which file
        raise OSError(err.errno, err.strerror, str(path)) from err
    finally:
        partial.unlink(missing_ok=True)
        pyplot().close(fig)
    return path
