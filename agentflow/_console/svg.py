"""What the console's server-rendered figures are drawn from: rectangles with hover text.

The run waterfall and the overview's charts draw the same shape; the templates turn each
into an SVG ``rect`` (with a ``title``, and a link when it has one).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    """A rectangle: where, which class (colour), its hover text, and where it links.

    ``testid`` names it for the browser tests; ``cause`` is what a waterfall wait is on
    (a key of ``waterfall.CAUSES``).
    """

    x: float
    y: float
    width: float
    height: float
    css: str
    title: str = ""
    href: str = ""
    testid: str = ""
    cause: str = ""

    def __post_init__(self) -> None:
        for name in ("x", "y", "width", "height"):  # short attributes in the page
            object.__setattr__(self, name, round(getattr(self, name), 1))
