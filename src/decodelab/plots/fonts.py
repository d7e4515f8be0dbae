"""Fonts for plots: token pieces are often Korean, and matplotlib's default font has no Hangul.

`setup_matplotlib()` puts the first installed font that has Hangul (Debian's fonts-noto-cjk, Nanum,
Malgun, Apple) ahead of the default sans-serif family, with DejaVu Sans after it for the glyphs it
lacks. Plot code builds `matplotlib.figure.Figure` objects directly (no pyplot), so it never needs a
GUI backend.
"""

from __future__ import annotations

from functools import lru_cache

# Families known to carry Hangul, best first.
HANGUL_FONTS = (
    "Noto Sans CJK KR",
    "Noto Sans KR",
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "NanumGothic",
    "NanumBarunGothic",
    "Malgun Gothic",
    "Apple SD Gothic Neo",
    "AppleGothic",
)


@lru_cache(maxsize=1)
def hangul_font() -> str | None:
    """The name of an installed font family with Hangul, or None when the machine has none."""
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    return next((name for name in HANGUL_FONTS if name in installed), None)


def setup_matplotlib() -> None:
    """A Hangul-capable font first in the sans-serif list, when one is installed."""
    import matplotlib

    font = hangul_font()
    sans = list(matplotlib.rcParams["font.sans-serif"])
    if font and sans[:1] != [font]:
        matplotlib.rcParams["font.sans-serif"] = [font] + [name for name in sans if name != font]
    # Families named one by one fall back glyph by glyph (a generic "sans-serif" resolves to one font only):
    # DejaVu Sans, shipped with matplotlib, draws the arrows the CJK font lacks, such as '↵' and '⇥'.
    matplotlib.rcParams["font.family"] = [font, "DejaVu Sans"] if font else "sans-serif"
    matplotlib.rcParams["axes.unicode_minus"] = False  # CJK fonts often lack U+2212
