"""Reading a report.html back: its inlined images (decoded with PIL) by alt text, and its text."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image


@dataclass
class Page:
    charts: dict = field(default_factory=dict)  # chart title -> PIL image
    images: dict = field(default_factory=dict)  # other images' alt text -> PIL image
    text: str = ""


class _Reader(HTMLParser):
    def __init__(self):
        super().__init__()
        self.page, self.parts = Page(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag != "img":
            return
        src = attrs.get("src", "")
        assert src.startswith("data:image/png;base64,"), src[:80]  # inlined: nothing fetched
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        image.load()
        if "data-chart" in attrs:
            self.page.charts[attrs["data-chart"]] = image.convert("RGB")
        else:
            self.page.images[attrs.get("alt", "")] = image.convert("RGB")

    def handle_data(self, data):
        self.parts.append(data)


def parse_report(path: Path) -> Page:
    reader = _Reader()
    reader.feed(Path(path).read_text(encoding="utf-8"))
    reader.page.text = " ".join(" ".join(reader.parts).split())
    return reader.page
