"""Charts of the run report as inline SVG (matplotlib), readable on a server without CJK fonts.

Text is drawn as glyph outlines (``svg.fonttype: path``): each chart carries the shapes of the
characters it uses, so 战略客户 renders in any browser whether or not it has a Chinese font.
Drawing them needs a CJK font where the report is *written*; Debian's ``fonts-wqy-microhei``
(``.ci/run`` and the Dockerfile install it) or ``fonts-noto-cjk`` is found by file path, since
matplotlib's font cache may predate the font's installation.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

# Debian's CJK font packages, in order of preference: the family and the file it ships.
CJK_FONTS = (
    ("Noto Sans CJK SC", "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    ("WenQuanYi Micro Hei", "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
    ("WenQuanYi Zen Hei", "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
)
LATIN_FONT = "DejaVu Sans"  # ships with matplotlib itself
PALETTE = ("#1f4e79", "#2e86c1", "#48c9b0", "#f5b041", "#a6acaf", "#8e44ad", "#e74c3c", "#7f8c8d", "#27ae60")


@cache
def cjk_family() -> str | None:
    """The CJK font family matplotlib draws with, or None when the machine has none."""
    from matplotlib import font_manager

    known = {f.name for f in font_manager.fontManager.ttflist}
    for family, path in CJK_FONTS:
        if family not in known and Path(path).exists():
            font_manager.fontManager.addfont(path)
            known = {f.name for f in font_manager.fontManager.ttflist}
        if family in known:
            return family
    return None


def _pyplot():
    import matplotlib

    matplotlib.use("svg", force=False)
    from matplotlib import pyplot

    pyplot.rcParams.update({
        "svg.fonttype": "path",
        # stable element ids: the same data gives the same file
        "svg.hashsalt": "tierline",
        "font.family": [LATIN_FONT, *([cjk_family()] if cjk_family() else [])],
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    })
    return pyplot


def _svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    _pyplot().close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # inline: without the XML prolog and doctype


def stacked_shares(title: str, dates: list[str], series: list[tuple[str, list[float]]]) -> str:
    """A 100% stacked bar per date: ``series`` is (label, share per date), bottom first."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 3.2))
    bottom = [0.0] * len(dates)
    for label, shares in series:
        ax.bar(dates, shares, bottom=bottom, label=label, width=0.7)
        bottom = [b + s for b, s in zip(bottom, shares, strict=True)]
    ax.set_ylim(0, 1)
    ax.yaxis.set_major_formatter(lambda v, _pos: f"{v:.0%}")
    ax.set_title(title, loc="left")
    handles, labels = ax.get_legend_handles_labels()  # listed top to bottom, as stacked
    ax.legend(handles[::-1], labels[::-1], loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    if len(dates) > 8:
        ax.tick_params(axis="x", labelrotation=45)
    return _svg(fig)


def heatmap(title: str, rows: list[str], columns: list[str], values: list[list[int]]) -> str:
    """Counts of a matrix (from x to), each cell annotated, darker for more."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.2 + 1.0 * len(columns), 0.9 + 0.45 * len(rows)))
    image = ax.imshow(values, cmap="Blues", aspect="auto")
    ax.set_xticks(range(len(columns)), labels=columns)
    ax.set_yticks(range(len(rows)), labels=rows)
    ax.set_xlabel("now 现在")
    ax.set_ylabel("before 之前")
    ax.set_title(title, loc="left")
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    top = max((v for row in values for v in row), default=0) or 1
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:,}", ha="center", va="center", color="white" if value > top / 2 else "#222")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _svg(fig)


def stage_times(title: str, stages: list[str], now: list[float], previous: list[list[float]]) -> str:
    """Seconds per stage: this run as bars, every previous run as a dot beside it."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 0.6 + 0.32 * len(stages)))
    positions = list(range(len(stages)))
    ax.barh(positions, now, height=0.6, label="this run", color=PALETTE[1])
    for i, seconds in enumerate(previous):
        ax.plot(seconds, [i] * len(seconds), "o", color="#222", markersize=3,
                label="previous runs" if i == 0 and seconds else None)
    ax.set_yticks(positions, labels=stages)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title(title, loc="left")
    ax.legend(frameon=False, loc="lower right")
    return _svg(fig)


def bars(title: str, labels: list[str], values: list[int]) -> str:
    """One horizontal bar per label, annotated with its value."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 0.6 + 0.3 * max(len(labels), 1)))
    positions = list(range(len(labels)))
    ax.barh(positions, values, height=0.6, color=PALETTE[3])
    for i, value in enumerate(values):
        ax.text(value, i, f" {value:,}", va="center")
    ax.set_yticks(positions, labels=labels)
    ax.invert_yaxis()
    ax.set_title(title, loc="left")
    ax.margins(x=0.12)
    return _svg(fig)
