"""Small bar charts drawn as inline SVG on the server (no script, no foreign assets).

Colours come from the stylesheet (``.chart .bar``); every label is escaped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

FONT = 11


def _nice_max(value: float) -> int:
    """A round number at or above ``value`` for the axis (1, 2, 2.5 or 5 times a power of ten)."""
    if value <= 5:
        return 5
    for power in range(0, 13):
        for step in (1, 2, 2.5, 5):
            top = int(step * 10**power)
            if top >= value:
                return top
    return int(value) + 1


def plain(value: float) -> str:
    """A count as a label: ``7``, ``2.5``."""
    return f"{value:g}"


def short_number(value: float) -> str:
    """A value as a bar's label: ``950``, ``1.2k``, ``35k``, ``1.4M`` (rounded; the tooltip has it exact)."""
    size = abs(value)
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if size >= limit:
            scaled = value / limit
            return f"{scaled:.1f}".removesuffix(".0") + suffix if abs(scaled) < 10 else f"{scaled:.0f}{suffix}"
    return f"{value:.0f}" if value == int(value) or size >= 100 else f"{value:.1f}"


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def column_chart(items: Sequence[tuple[str, float]], *, title: str, sublabels: Sequence[str] = (),
                 fmt: Callable[[float], str] = plain, tip: Callable[[float], str] = plain) -> Markup:
    """Vertical bars, one per (label, value); ``sublabels`` go under the labels (years).

    ``fmt`` writes a value above its bar and on the axis, ``tip`` in its tooltip (amounts: short, and exact).
    """
    width, height = 360, 190
    top_value = _nice_max(max((v for _, v in items), default=0))
    left, right, top, bottom = max(26, 7 * len(fmt(top_value)) + 8), 6, 16, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(1, len(items))
    slot = plot_w / n
    bar_w = max(4.0, slot * 0.64)
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']
    for frac in (0, 0.5, 1):
        y = top + plot_h * (1 - frac)
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        label = fmt(top_value * frac)
        parts.append(f'<text class="axis" x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{escape(label)}</text>')
    for i, (label, value) in enumerate(items):
        x = left + slot * i + (slot - bar_w) / 2
        h = plot_h * value / top_value if top_value else 0
        y = top + plot_h - h
        tip_text = f"{label} {sublabels[i] if i < len(sublabels) else ''}".strip() + f": {tip(value)}"
        parts.append(f'<g class="col"><title>{escape(tip_text)}</title>'
                     f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{max(h, 0):.1f}" rx="2"/>')
        if value:
            parts.append(f'<text class="value" x="{x + bar_w / 2:.1f}" y="{y - 3:.1f}" '
                         f'text-anchor="middle">{escape(fmt(value))}</text>')
        parts.append(f'<text class="label" x="{x + bar_w / 2:.1f}" y="{height - bottom + 14}" '
                     f'text-anchor="middle">{escape(label)}</text>')
        if i < len(sublabels) and sublabels[i]:
            parts.append(f'<text class="sublabel" x="{x + bar_w / 2:.1f}" y="{height - bottom + 27}" '
                         f'text-anchor="middle">{escape(sublabels[i])}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(items: Sequence[tuple[str, float]], *, title: str, empty: str = "Nothing yet",
              fmt: Callable[[float], str] = plain, tip: Callable[[float], str] = plain) -> Markup:
    """Horizontal bars, one row per (label, value), largest first as given; ``fmt``, ``tip`` as column_chart's."""
    width, row, label_w = 360, 24, 128
    height = max(1, len(items)) * row + 8
    top_value = max((v for _, v in items), default=0) or 1
    plot_w = width - label_w - 40
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']
    if not items:
        parts.append(f'<text class="empty" x="{width / 2}" y="{height / 2 + 4}" text-anchor="middle">'
                     f'{escape(empty)}</text>')
    for i, (label, value) in enumerate(items):
        y = 4 + i * row
        w = max(2.0, plot_w * value / top_value)
        parts.append(f'<g class="row"><title>{escape(label)}: {escape(tip(value))}</title>'
                     f'<text class="label" x="{label_w - 8}" y="{y + row / 2 + 4:.1f}" text-anchor="end">'
                     f'{escape(_short(label, 17))}</text>'
                     f'<rect class="bar" x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row - 8}" rx="2"/>'
                     f'<text class="value" x="{label_w + w + 5:.1f}" y="{y + row / 2 + 4:.1f}">'
                     f'{escape(fmt(value))}</text></g>')
    parts.append("</svg>")
    return Markup("".join(parts))
