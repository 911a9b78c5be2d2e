"""The executed notebook as a sanitized HTML fragment for the report.

Everything in the notebook is untrusted: code and text outputs are escaped, markdown and
text/html outputs go through nh3 (no scripts, event handlers, styles, forms, frames, or
javascript: URLs), image/png outputs are embedded only if they decode as PNG, and JavaScript
outputs are never rendered. Output is capped per cell ("出力を省略しました").
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass, field
from html import escape
from typing import Any

from markdown_it import MarkdownIt
from PIL import Image, UnidentifiedImageError

from grader.i18n import t

try:  # Colab has no nh3: the self-check (grader.selfcheck.page) then shows HTML outputs as their plain text
    import nh3
    HAS_NH3 = True
except ImportError:  # pragma: no cover - the grader's own venv has it (requirements.lock)
    HAS_NH3 = False

MAX_CELLS = 300
MAX_SOURCE_CHARS = 20_000
MAX_TEXT_PER_CELL = 6_000  # characters of text output shown per cell
MAX_LINES_PER_CELL = 120
MAX_IMAGES_PER_CELL = 4
MAX_IMAGE_BYTES = 1_500_000  # one PNG
MAX_IMAGE_TOTAL = 4_000_000  # all PNGs in one notebook
MAX_IMAGE_PIXELS = 4_000_000
HARNESS_FRAMES = ("grader_kernel.py", "keras2_bridge.py")  # traceback frames of the grading harness, hidden from students
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

ALLOWED_TAGS = {"a", "abbr", "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd", "del", "details",
                "div", "dl", "dt", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li",
                "ol", "p", "pre", "q", "s", "samp", "small", "span", "strong", "sub", "summary", "sup", "table",
                "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul", "var"}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "width", "height"}, "td": {"colspan", "rowspan"},
                      "th": {"colspan", "rowspan", "scope"}, "ol": {"start"}}
CLEAN_CONTENT = {"script", "style", "iframe", "object", "embed", "form", "noscript", "template", "svg", "math"}
LINK_SCHEMES = ("http://", "https://", "mailto:", "#")
IMAGE_PREFIXES = ("data:image/png;base64,", "data:image/jpeg;base64,", "data:image/gif;base64,")
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[@-_]")
HEADING = re.compile(r"<(/?)h([1-6])>")
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

_markdown = MarkdownIt("commonmark", {"html": False}).enable("table").enable("strikethrough")


def _url_filter(element: str, attribute: str, value: str) -> str | None:
    if attribute == "src":  # images only from data: URIs; anything else would reach out
        return value if value.startswith(IMAGE_PREFIXES) else None
    if attribute == "href":
        return value if value.strip().lower().startswith(LINK_SCHEMES) else None
    return value


def markdown_html(source: str) -> str:
    """A markdown cell as HTML: markdown-it escapes raw HTML and refuses script links itself; nh3 (where
    there is one) keeps only inert markup on top of that."""
    html = _markdown.render(source)
    return sanitize_html(html) if HAS_NH3 else html


def sanitize_html(fragment: str) -> str:
    """Untrusted HTML → a fragment with only inert markup (nothing at all without nh3)."""
    if not HAS_NH3:
        return ""
    return nh3.clean(fragment, tags=ALLOWED_TAGS, clean_content_tags=CLEAN_CONTENT, attributes=ALLOWED_ATTRIBUTES,
                     attribute_filter=_url_filter, url_schemes={"http", "https", "mailto", "data"},
                     strip_comments=True, link_rel="noopener noreferrer nofollow")


def terminal_text(text: str) -> str:
    """What a terminal would show: ANSI colours removed, \\r overwrites, \\b erases (Keras progress bars)."""
    text = ANSI.sub("", text)
    lines = []
    for line in text.split("\n"):
        line = line.rstrip("\r").split("\r")[-1]
        if "\b" in line:
            out: list[str] = []
            for ch in line:
                if ch == "\b":
                    if out:
                        out.pop()
                else:
                    out.append(ch)
            line = "".join(out)
        lines.append(CONTROL.sub("", line))
    return "\n".join(lines)


def png_bytes(data: Any) -> bytes | None:
    """The PNG an output claims to hold, if it really is a (not too large) PNG."""
    if isinstance(data, list):
        data = "".join(str(part) for part in data)
    if not isinstance(data, str) or len(data) > MAX_IMAGE_BYTES * 4 // 3 + 16:
        return None
    try:
        raw = base64.b64decode(data.replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw.startswith(PNG_SIGNATURE) or len(raw) > MAX_IMAGE_BYTES:
        return None
    try:
        with Image.open(io.BytesIO(raw)) as image:
            if image.format != "PNG" or image.width * image.height > MAX_IMAGE_PIXELS:
                return None
            image.verify()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return raw


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return value if isinstance(value, str) else ""


def merge_streams(outputs: list[Any]) -> list[Any]:
    """Consecutive writes to one stream as one output, as Jupyter shows them (progress bars use \\b and \\r)."""
    merged: list[Any] = []
    pieces: dict[int, list[str]] = {}  # index in merged → its texts, joined once at the end
    for output in outputs:
        if not isinstance(output, dict):
            continue
        last = merged[-1] if merged else None
        if (output.get("output_type") == "stream" and last is not None and last.get("output_type") == "stream"
                and last.get("name") == output.get("name")):
            pieces[len(merged) - 1].append(_text(output.get("text")))
            continue
        merged.append(output)
        if output.get("output_type") == "stream":
            pieces[len(merged) - 1] = [_text(output.get("text"))]
    for index, texts in pieces.items():
        if len(texts) > 1:
            merged[index] = {**merged[index], "text": "".join(texts)}
    return merged


@dataclass
class CellBudget:
    """What one cell may still show."""

    chars: int = MAX_TEXT_PER_CELL
    lines: int = MAX_LINES_PER_CELL
    images: int = MAX_IMAGES_PER_CELL
    truncated: bool = False

    def take(self, text: str) -> str:
        kept = text[: max(self.chars, 0)]
        if kept.count("\n") > self.lines:
            kept = "\n".join(kept.split("\n")[: max(self.lines, 0)])
        if len(kept) < len(text):
            self.truncated = True
        self.chars -= len(kept)
        self.lines -= kept.count("\n")
        return kept


@dataclass
class RenderedNotebook:
    html: str
    failed_cells: list[int] = field(default_factory=list)  # cell indexes with an error output
    truncated_cells: list[int] = field(default_factory=list)  # cell indexes whose output was cut here
    dropped: list[str] = field(default_factory=list)  # output types not shown (e.g. JavaScript)
    stopped_at: int | None = None  # timeout / dead kernel: the cell that was running


class NotebookRenderer:
    def __init__(self, lang: str = "ja") -> None:
        self.lang = lang
        self.image_bytes_left = MAX_IMAGE_TOTAL

    def render(self, nb: Any, *, stopped: bool = False) -> RenderedNotebook:
        """`stopped`: the run ended early (timeout, dead kernel); cells after the last one started did not run."""
        cells = list(getattr(nb, "cells", None) or [])
        started = [i for i, c in enumerate(cells) if c.get("cell_type") == "code" and c.get("execution_count")]
        result = RenderedNotebook(html="", stopped_at=started[-1] if stopped and started else None)
        parts = []
        for index, cell in enumerate(cells[:MAX_CELLS]):
            parts.append(self.cell(index, cell, result, stopped=stopped))
        if len(cells) > MAX_CELLS:
            parts.append(f'<p class="truncated">{escape(t("notebook.more_cells", self.lang, count=len(cells) - MAX_CELLS))}</p>')
        result.html = "\n".join(parts)
        return result

    def cell(self, index: int, cell: Any, result: RenderedNotebook, *, stopped: bool) -> str:
        kind = cell.get("cell_type")
        source = _text(cell.get("source"))
        if len(source) > MAX_SOURCE_CHARS:
            source = source[:MAX_SOURCE_CHARS] + "\n…"
        if kind == "markdown":  # headings shifted down two levels: the report's own h1/h2 stay the outline
            html = HEADING.sub(lambda m: f"<{m.group(1)}h{min(6, int(m.group(2)) + 2)}>",
                               markdown_html(source))
            return f'<div class="cell md" id="cell-{index}">{html}</div>'
        if kind != "code":
            return f'<div class="cell raw" id="cell-{index}"><pre>{escape(source)}</pre></div>'
        count = cell.get("execution_count")
        not_run = stopped and (result.stopped_at is None or index > result.stopped_at)
        budget = CellBudget()
        outputs = [] if not_run else [self.output(o, budget, result) for o in merge_streams(cell.get("outputs") or [])]
        failed = any(o.get("output_type") == "error" for o in (cell.get("outputs") or [])) and not not_run
        classes, badge = ["cell", "code"], ""
        if failed:
            result.failed_cells.append(index)
            classes.append("failed")
            badge = f'<span class="badge error">{t("notebook.error", self.lang)}</span>'
        elif index == result.stopped_at:
            classes.append("failed")
            badge = f'<span class="badge error">{t("notebook.stopped_here", self.lang)}</span>'
        elif not_run:
            classes.append("not-run")
            badge = f'<span class="badge">{t("notebook.not_run", self.lang)}</span>'
        if budget.truncated:
            result.truncated_cells.append(index)
            outputs.append(f'<p class="truncated">{t("notebook.output_truncated", self.lang)}</p>')
        prompt = f"[{count}]" if count else "[ ]"
        body = "".join(o for o in outputs if o)
        return (f'<div class="{" ".join(classes)}" id="cell-{index}"><div class="prompt">{prompt} {badge}</div>'
                f'<pre class="source">{escape(source)}</pre>'
                + (f'<div class="outputs">{body}</div>' if body else "") + "</div>")

    def output(self, output: Any, budget: CellBudget, result: RenderedNotebook) -> str:
        kind = output.get("output_type")
        if kind == "stream":
            name = "stderr" if output.get("name") == "stderr" else "stdout"
            text = budget.take(terminal_text(_text(output.get("text"))))
            return f'<pre class="{name}">{escape(text)}</pre>' if text.strip() else ""
        if kind == "error":
            frames = [terminal_text(_text(frame)) for frame in (output.get("traceback") or [])]
            trace = "\n".join(f for f in frames if not any(h in f for h in HARNESS_FRAMES))  # the grader's tracing is not the student's code
            trace = trace or f"{_text(output.get('ename'))}: {_text(output.get('evalue'))}"
            return f'<pre class="traceback">{escape(budget.take(trace))}</pre>'
        if kind in ("execute_result", "display_data"):
            return self.rich(output.get("data") or {}, budget, result)
        return ""

    def rich(self, data: dict[str, Any], budget: CellBudget, result: RenderedNotebook) -> str:
        for mime in ("application/javascript", "text/javascript", "application/vnd.jupyter.widget-view+json"):
            if mime in data and mime not in result.dropped:
                result.dropped.append(mime)
        if "image/png" in data:
            raw = png_bytes(data["image/png"])
            if raw is not None and budget.images > 0 and len(raw) <= self.image_bytes_left:
                budget.images -= 1
                self.image_bytes_left -= len(raw)
                return f'<img class="output" alt="" src="data:image/png;base64,{base64.b64encode(raw).decode("ascii")}">'
            if raw is not None:
                budget.truncated = True
                return ""
        if "text/html" in data and HAS_NH3:
            html = _text(data["text/html"])
            if len(html) <= budget.chars:
                budget.chars -= len(html)
                return f'<div class="html-output">{sanitize_html(html)}</div>'
            budget.truncated = True
        text = budget.take(_text(data.get("text/plain")))
        return f'<pre class="result">{escape(text)}</pre>' if text else ""


def render_notebook(nb: Any, lang: str = "ja", *, stopped: bool = False) -> RenderedNotebook:
    return NotebookRenderer(lang).render(nb, stopped=stopped)
