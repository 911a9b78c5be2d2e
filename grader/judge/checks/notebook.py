"""Checks on the submitted notebook itself (read as data): the written 考察."""

from __future__ import annotations

import re

from grader.judge.checks import MANUAL, CheckContext, Observation, kind, verdict


def answer_after_heading(nb, heading: str) -> str:
    """Text of the markdown cells after the heading cell, up to the next heading of that level or a code cell."""
    cells = list(getattr(nb, "cells", []) or [])
    pattern = re.compile(rf"^\s*#+\s*{re.escape(heading)}", re.MULTILINE)
    for index, cell in enumerate(cells):
        if cell.get("cell_type") == "markdown" and pattern.search(cell.get("source", "")):
            parts = []
            rest = pattern.split(cell.get("source", ""), maxsplit=1)[-1].split("\n", 1)
            if len(rest) > 1:
                parts.append(rest[1])
            for following in cells[index + 1:]:
                if following.get("cell_type") != "markdown" or re.match(r"^\s*#", following.get("source", "")):
                    break
                parts.append(following.get("source", ""))
            return "\n".join(parts).strip()
    return ""


@kind("written_answer")
def written_answer(ctx: CheckContext) -> Observation:
    """Answered → `manual` (a TA scores it); empty or still the placeholder → fail."""
    heading = ctx.params["heading"]
    placeholder = ctx.params.get("placeholder", "")
    min_chars = int(ctx.params.get("min_chars", 30))
    text = answer_after_heading(ctx.notebook, heading)
    own = text.replace(placeholder, "").strip() if placeholder else text
    expected = f"≥ {min_chars}"
    if len(own) < min_chars:
        return verdict(False, len(own), expected, "answer_missing", heading=heading)
    return Observation(MANUAL, len(own), expected, "answer_to_review", {"excerpt": own[:300]})
