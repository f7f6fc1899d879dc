"""A tiny document model with two renderers: one self-contained HTML page and its Markdown twin.

The report is built once as blocks (sections, paragraphs, tables, code, figures) and rendered
twice, so the HTML and the Markdown cannot tell different stories. Text may carry `code`
spans and **bold**; everything else is escaped. HTML images are base64 data URIs (the page
needs no other file); Markdown images are PNG files written beside the .md file.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

INLINE = re.compile(r"(`[^`]+`|\*\*[^*]+\*\*)")


@dataclass
class Para:
    text: str
    css: str = ""  # "note" (a plainly stated gap or caveat), "lead" (the first line of a section)


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Cell:
    text: str
    css: str = ""  # e.g. a verdict class, "unexpected", "missing"


@dataclass
class Table:
    header: list[str]
    rows: list[list[Union[str, Cell]]]
    caption: str = ""
    css: str = ""


@dataclass
class Code:
    text: str
    summary: str = ""  # when given: collapsed under this line in HTML, headed by it in Markdown
    lang: str = ""


@dataclass
class Figure:
    name: str  # file stem, unique in the report
    png: bytes
    caption: str


@dataclass
class Section:
    anchor: str
    title: str
    blocks: list["Block"] = field(default_factory=list)

    def add(self, *blocks: "Block") -> "Section":
        self.blocks.extend(blocks)
        return self


Block = Union[Para, Bullets, Table, Code, Figure, Section]


@dataclass
class Document:
    title: str
    subtitle: str
    sections: list[Section]


# ---- HTML ------------------------------------------------------------------------------

CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d2228;
 margin:0 auto;max-width:1180px;padding:24px 32px 64px;background:#fff}
h1{font-size:28px;margin:0 0 4px}h2{font-size:22px;border-bottom:2px solid #d5dbe1;padding-bottom:4px;margin-top:40px}
h3{font-size:18px;margin-top:32px}h4{font-size:15px;margin:20px 0 6px;color:#34495e}
p.subtitle{color:#5d6d7e;margin-top:0}p.lead{font-size:16px}
p.note{background:#fff8e1;border-left:4px solid #f0b429;padding:6px 10px}
nav.toc{background:#f4f6f8;padding:8px 16px;border-radius:6px;font-size:14px}nav.toc ul{margin:4px 0;padding-left:20px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}caption{caption-side:top;text-align:left;
 font-weight:600;padding:4px 0;color:#34495e}
th,td{border:1px solid #d5dbe1;padding:4px 8px;vertical-align:top;text-align:left}th{background:#eef1f4}
table.timeline td:nth-child(1){text-align:right;color:#5d6d7e}table.numbers td{text-align:right}
table.numbers td:nth-child(-n+3),table.numbers td:last-child{text-align:left}
table.numbers td:nth-child(-n+9),table.proofs td:nth-child(-n+3),table.proofs td:last-child{white-space:nowrap}
td.bad{background:#fadbd8}
td.bug{background:#fadbd8;font-weight:600}td.fresh{background:#d5f5e3;font-weight:600}
td.myth{background:#e8eaf6;font-weight:600}td.na{background:#eceff1;color:#5d6d7e}
td.inconclusive,td.unexpected{background:#fdebd0;font-weight:700;outline:2px solid #e67e22}
td.missing{background:#f8f9f9;color:#7f8c8d;font-style:italic}
code{font:13px/1.4 ui-monospace,"DejaVu Sans Mono",monospace;background:#f4f6f8;padding:0 3px;border-radius:3px}
pre{font:12px/1.4 ui-monospace,"DejaVu Sans Mono",monospace;background:#f8f9fa;border:1px solid #e5e8eb;
 padding:8px;overflow-x:auto}pre .add{background:#e6ffed;display:block}pre .del{background:#ffeef0;display:block}
pre .hunk{color:#6f42c1;display:block}
details summary{cursor:pointer;color:#1f618d;margin:6px 0}
figure{margin:12px 0 24px}figure img{max-width:100%;border:1px solid #e5e8eb}figcaption{font-size:13px;color:#34495e}
"""


def inline_html(text: str) -> str:
    out = []
    for index, part in enumerate(INLINE.split(text)):  # odd indexes are the matched spans
        if index % 2 and part.startswith("`"):
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        elif index % 2:
            out.append(f"<strong>{html.escape(part[2:-2])}</strong>")
        else:
            out.append(html.escape(part))
    return "".join(out).replace("\n", "<br>")


def to_html(doc: Document) -> str:
    body = [f"<h1>{inline_html(doc.title)}</h1>", f'<p class="subtitle">{inline_html(doc.subtitle)}</p>', _toc_html(doc)]
    body += [_block_html(section, 2) for section in doc.sections]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(doc.title)}</title>"
            f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


def _toc_html(doc: Document) -> str:
    items = []
    for section in doc.sections:
        subs = [b for b in section.blocks if isinstance(b, Section)]
        inner = "".join(f'<li><a href="#{s.anchor}">{inline_html(s.title)}</a></li>' for s in subs)
        items.append(f'<li><a href="#{section.anchor}">{inline_html(section.title)}</a>'
                     + (f"<ul>{inner}</ul>" if inner and len(subs) <= 20 else "") + "</li>")
    return f'<nav class="toc"><strong>Contents</strong><ul>{"".join(items)}</ul></nav>'


def _block_html(block: Block, level: int) -> str:
    if isinstance(block, Section):
        heading = f"<h{level}>{inline_html(block.title)}</h{level}>"
        inner = "\n".join(_block_html(b, min(level + 1, 4)) for b in block.blocks)
        return f'<section id="{html.escape(block.anchor)}">{heading}\n{inner}\n</section>'
    if isinstance(block, Para):
        css = f' class="{block.css}"' if block.css else ""
        return f"<p{css}>{inline_html(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{inline_html(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        css = f' class="{block.css}"' if block.css else ""
        caption = f"<caption>{inline_html(block.caption)}</caption>" if block.caption else ""
        head = "<tr>" + "".join(f"<th>{inline_html(h)}</th>" for h in block.header) + "</tr>"
        rows = "".join("<tr>" + "".join(_cell_html(c) for c in row) + "</tr>" for row in block.rows)
        return f"<table{css}>{caption}<thead>{head}</thead><tbody>{rows}</tbody></table>"
    if isinstance(block, Code):
        pre = f"<pre>{_code_html(block)}</pre>"
        return f"<details><summary>{inline_html(block.summary)}</summary>{pre}</details>" if block.summary else pre
    if isinstance(block, Figure):
        data = base64.b64encode(block.png).decode("ascii")
        return (f'<figure id="fig-{html.escape(block.name)}"><img alt="{html.escape(block.caption.replace("`", ""))}" '
                f'src="data:image/png;base64,{data}"><figcaption>{inline_html(block.caption)}</figcaption></figure>')
    raise TypeError(f"unknown block {block!r}")


def _cell_html(cell: Union[str, Cell]) -> str:
    if isinstance(cell, Cell):
        css = f' class="{cell.css}"' if cell.css else ""
        return f"<td{css}>{inline_html(cell.text)}</td>"
    return f"<td>{inline_html(cell)}</td>"


def _code_html(block: Code) -> str:
    if block.lang != "diff":
        return html.escape(block.text)
    classes = {"+": "add", "-": "del", "@": "hunk"}
    lines = []
    for line in block.text.splitlines():
        css = "" if line.startswith(("+++", "---")) else classes.get(line[:1], "")
        lines.append(f'<span class="{css}">{html.escape(line)}</span>' if css else html.escape(line) + "\n")
    return "".join(lines)


# ---- Markdown --------------------------------------------------------------------------

def inline_md(text: str, in_table: bool = False) -> str:
    out = []
    for index, part in enumerate(INLINE.split(text)):
        if index % 2:
            out.append(part.replace("|", "\\|") if in_table else part)
        else:
            part = part.replace("\\", "\\\\").replace("<", "&lt;").replace("*", "\\*")
            out.append(part.replace("|", "\\|") if in_table else part)
    joined = "".join(out)
    return joined.replace("\n", "<br>") if in_table else joined


def to_markdown(doc: Document, image_dir: str) -> str:
    """`image_dir`: where the figures' PNG files are, relative to the Markdown file."""
    lines = [f"# {inline_md(doc.title)}", "", inline_md(doc.subtitle), "", "Contents:", ""]
    lines += [f"- [{inline_md(s.title)}](#{s.anchor})" for s in doc.sections]
    lines.append("")
    for section in doc.sections:
        lines += _block_md(section, 2, image_dir)
    return "\n".join(lines).rstrip() + "\n"


def _block_md(block: Block, level: int, image_dir: str) -> list[str]:
    if isinstance(block, Section):
        out = [f'<a id="{block.anchor}"></a>', "", f"{'#' * level} {inline_md(block.title)}", ""]
        for inner in block.blocks:
            out += _block_md(inner, min(level + 1, 4), image_dir)
        return out
    if isinstance(block, Para):
        prefix = "> " if block.css == "note" else ""
        return [prefix + inline_md(block.text).replace("\n", "\n" + prefix), ""]
    if isinstance(block, Bullets):
        return [f"- {inline_md(item)}" for item in block.items] + [""]
    if isinstance(block, Table):
        out = [f"*{inline_md(block.caption)}*", ""] if block.caption else []
        out.append("| " + " | ".join(inline_md(h, True) for h in block.header) + " |")
        out.append("|" + "---|" * len(block.header))
        for row in block.rows:
            texts = [c.text if isinstance(c, Cell) else c for c in row]
            out.append("| " + " | ".join(inline_md(t, True) for t in texts) + " |")
        return out + [""]
    if isinstance(block, Code):
        fence = "```"
        head = [f"{inline_md(block.summary)}:", ""] if block.summary else []
        return head + [fence + block.lang, block.text.rstrip("\n"), fence, ""]
    if isinstance(block, Figure):
        return [f"![{inline_md(block.caption.replace('`', ''))}]({image_dir}/{block.name}.png)", "", f"*{inline_md(block.caption)}*", ""]
    raise TypeError(f"unknown block {block!r}")


def figures(doc: Document) -> list[Figure]:
    """Every figure of the document, in order (the Markdown needs them as files)."""
    found: list[Figure] = []

    def walk(blocks: list[Block]) -> None:
        for block in blocks:
            if isinstance(block, Figure):
                found.append(block)
            elif isinstance(block, Section):
                walk(block.blocks)

    walk(list(doc.sections))
    return found


def write(doc: Document, out_dir: Path, stem: str = "report") -> tuple[Path, Path]:
    """Write <stem>.html (self-contained) and <stem>.md with its images in <stem>-images/."""
    out_dir.mkdir(parents=True, exist_ok=True)
    image_dir = out_dir / f"{stem}-images"
    image_dir.mkdir(exist_ok=True)
    for old in image_dir.glob("*.png"):  # this folder is the report's own: no figure of an older run stays
        old.unlink()
    for figure in figures(doc):
        (image_dir / f"{figure.name}.png").write_bytes(figure.png)
    html_path, md_path = out_dir / f"{stem}.html", out_dir / f"{stem}.md"
    html_path.write_text(to_html(doc), encoding="utf-8")
    md_path.write_text(to_markdown(doc, image_dir.name), encoding="utf-8")
    return html_path, md_path
