"""The report's blocks rendered as Markdown, and as one self-contained HTML page (PNG figures
embedded as base64, so the file travels alone).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

HTML_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1300px; margin: 2em auto; padding: 0 1em;
       color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
figure { margin: 1em 0 2em; }
img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #555; }
"""


def _md_cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[tuple]) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append(f"{'#' * block[1]} {block[2]}")
        elif kind == "p":
            out.append(block[1])
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "table":
            table = block[1]
            lines = ["| " + " | ".join(_md_cell(c) for c in table.columns) + " |"]
            lines.append("|" + "---|" * len(table.columns))
            lines += [
                "| " + " | ".join(_md_cell(v) for v in row) + " |"
                for row in table.itertuples(index=False)
            ]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{block[2]}]({Path(block[1]).name})\n\n*{block[2]}*")
    return "\n\n".join(out) + "\n"


def to_html(blocks: list[tuple]) -> str:
    """One self-contained page: the PNG figures are embedded as base64 data URIs."""
    title = next((b[2] for b in blocks if b[0] == "h"), "attnbench report")
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{HTML_STYLE}</style></head><body>",
    ]
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
        elif kind == "p":
            out.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            out.append(block[1].to_html(index=False, border=0, escape=True, na_rep=""))
        elif kind == "img":
            data = base64.b64encode(Path(block[1]).read_bytes()).decode("ascii")
            out.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block[2])}">'
                f"<figcaption>{html.escape(block[2])}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"
