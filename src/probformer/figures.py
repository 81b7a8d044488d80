"""One place for matplotlib: the Agg backend, the resolutions, and byte-stable saving.

Every committed figure must be re-creatable by a command, and a re-run must not change a file whose
data did not change: so figures are saved without dates or matplotlib's version in their metadata,
and SVG element ids come from a fixed salt. matplotlib is imported only when a figure is drawn (the
library and its tests run without a display).

Two resolutions, each kept because committed pictures were drawn at it: experiment reports (lr
curves, coordinate checks, comparisons) at :data:`REPORT_DPI`, pictures of PT's marginals (arc
diagrams, heatmaps) at :data:`PICTURE_DPI`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

REPORT_DPI = 110
PICTURE_DPI = 150
PNG_METADATA = {"Software": None}
SVG_METADATA = {"Date": None, "Creator": None}
SVG_HASH_SALT = "probformer"

__all__ = ["PICTURE_DPI", "PNG_METADATA", "REPORT_DPI", "SVG_METADATA", "pyplot", "save_figure", "save_formats"]


def pyplot():
    """matplotlib's pyplot on the Agg backend, with the fixed SVG id salt."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    matplotlib.rcParams["svg.hashsalt"] = SVG_HASH_SALT
    import matplotlib.pyplot as plt

    return plt


def metadata(fmt: str) -> dict | None:
    """What a saved file of format ``fmt`` records about its making: nothing that changes between runs."""
    return {"svg": SVG_METADATA, "png": PNG_METADATA}.get(fmt)


def save_figure(fig, path: str | Path, *, rect: tuple[float, float, float, float] | None = None,
                dpi: int = REPORT_DPI) -> Path:
    """Lay ``fig`` out tight (within ``rect`` if given: room for a legend outside), save it as a PNG
    and close it."""
    plt = pyplot()
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=dpi, metadata=PNG_METADATA)
    plt.close(fig)
    return Path(path)


def save_formats(fig, stem: Path, formats: Sequence[str], *, dpi: int = PICTURE_DPI) -> list[Path]:
    """``fig`` as ``stem.<fmt>`` for each format, cropped to its drawing (``bbox_inches='tight'``)."""
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata(fmt))
        paths.append(path)
    return paths
