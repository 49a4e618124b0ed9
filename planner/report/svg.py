"""A few SVG elements written as text: enough for bar charts and a timeline, no library.

Every element a chart draws for a number carries that number in ``data-*`` attributes, so
a test (or a reader) can check the drawing against the JSON it came from.
"""

from __future__ import annotations

from html import escape


def attrs(**values: object) -> str:
    """``key="value"`` pairs; underscores in names become dashes (``data_gib`` -> data-gib)."""
    parts = []
    for name, value in values.items():
        if value is None:
            continue
        parts.append(f'{name.rstrip("_").replace("_", "-")}="{escape(str(value), quote=True)}"')
    return " ".join(parts)


def rect(x: float, y: float, width: float, height: float, **extra: object) -> str:
    """A rectangle; ``title`` (if given) becomes its tooltip."""
    title = extra.pop("title", None)
    body = f"<title>{escape(str(title))}</title>" if title is not None else ""
    return (
        f"<rect {attrs(x=_n(x), y=_n(y), width=_n(max(width, 0.0)), height=_n(height), **extra)}>"
        f"{body}</rect>"
    )


def text(x: float, y: float, content: str, **extra: object) -> str:
    return f"<text {attrs(x=_n(x), y=_n(y), **extra)}>{escape(content)}</text>"


def line(x1: float, y1: float, x2: float, y2: float, **extra: object) -> str:
    return f"<line {attrs(x1=_n(x1), y1=_n(y1), x2=_n(x2), y2=_n(y2), **extra)}/>"


def svg(width: float, height: float, body: list[str], *, label: str, **extra: object) -> str:
    """An SVG root with an accessible name (``role="img"`` and ``aria-label``)."""
    return (
        f"<svg {attrs(xmlns='http://www.w3.org/2000/svg', width=_n(width), height=_n(height), viewBox=f'0 0 {_n(width)} {_n(height)}', role='img', aria_label=label, **extra)}>"  # noqa: E501
        + "".join(body)
        + "</svg>"
    )


def _n(value: float) -> str:
    """A coordinate with two decimals, trailing zeros dropped."""
    return f"{value:.2f}".rstrip("0").rstrip(".")
