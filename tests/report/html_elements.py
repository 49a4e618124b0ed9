"""Read a report page back: the elements the figures drew, with their attributes."""

from __future__ import annotations

from html.parser import HTMLParser


class Elements(HTMLParser):
    """Every start tag of a page as (tag, attributes), in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, {name: value or "" for name, value in attrs}))


def elements(page: str, tag: str | None = None, **match: str) -> list[dict[str, str]]:
    """The attributes of every ``tag`` element whose attributes include ``match``."""
    parser = Elements()
    parser.feed(page)
    wanted = {name.replace("_", "-"): value for name, value in match.items()}
    return [
        attrs
        for found_tag, attrs in parser.found
        if (tag is None or found_tag == tag)
        and all(attrs.get(name) == value for name, value in wanted.items())
    ]
