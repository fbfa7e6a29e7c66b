"""One report, two renderings: Markdown (images linked) and a self-contained HTML page."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#1d2329;line-height:1.5}
h1{border-bottom:2px solid #2f6fab;padding-bottom:.3em}h2{margin-top:1.8em;color:#2f6fab}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}
th,td{border:1px solid #cfd6dd;padding:.35em .7em;text-align:right}
th{background:#eef3f8}td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#f8fafc}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #dde3e8}
figcaption{font-size:.88em;color:#56616c}.note{background:#fff8e5;border-left:4px solid #e0a800;
padding:.6em 1em}.verdict{font-size:1.1em;background:#eef6ee;border-left:4px solid #3c8d3c;
padding:.6em 1em}code{background:#f1f3f5;padding:0 .25em}
"""


@dataclass
class Document:
    title: str
    root: Path  # image paths are relative to this folder
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", level, text))

    def paragraph(self, text: str, style: str = "") -> None:
        self.blocks.append(("paragraph", text, style))

    def table(self, head: list, rows: list[list], caption: str = "") -> None:
        self.blocks.append(
            ("table", [str(h) for h in head], [[_cell(v) for v in row] for row in rows], caption)
        )

    def image(self, path: Path | str, caption: str) -> None:
        self.blocks.append(("image", Path(path).resolve(), caption))

    def markdown(self) -> str:
        out = [f"# {self.title}\n"]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                out.append(f"{'#' * block[1]} {block[2]}\n")
            elif kind == "paragraph":
                out.append(("> " if block[2] else "") + block[1] + "\n")
            elif kind == "table":
                _, head, rows, caption = block
                if caption:
                    out.append(f"*{caption}*\n")
                out.append("| " + " | ".join(head) + " |")
                out.append("|" + "|".join("---" for _ in head) + "|")
                out += [
                    "| " + " | ".join(r.replace("|", "\\|") for r in row) + " |" for row in rows
                ]
                out.append("")
            elif kind == "image":
                out.append(f"![{block[2]}]({self._relative(block[1])})\n\n*{block[2]}*\n")
        return "\n".join(out)

    def html(self) -> str:
        out = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                out.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
            elif kind == "paragraph":
                css = f" class='{block[2]}'" if block[2] else ""
                out.append(f"<p{css}>{_inline(block[1])}</p>")
            elif kind == "table":
                _, head, rows, caption = block
                out.append(
                    "<table>" + (f"<caption>{html.escape(caption)}</caption>" if caption else "")
                )
                out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
                out += [
                    "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
                    for row in rows
                ]
                out.append("</table>")
            elif kind == "image":
                out.append(
                    f"<figure><img alt='{html.escape(block[2])}' "
                    f"src='{self._data_uri(block[1])}'><figcaption>"
                    f"{html.escape(block[2])}</figcaption></figure>"
                )
        out.append("</body></html>")
        return "\n".join(out)

    def _relative(self, path: Path) -> str:
        try:
            return Path(path).resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(path)

    def _data_uri(self, path: Path) -> str:
        if not path.is_file():
            return ""
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _inline(text: str) -> str:
    """Escape, then honour `code` and **bold** (the only Markdown the reports use inline)."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
