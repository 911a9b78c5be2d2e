"""Words people read, in Japanese (first) and English: one catalogue, `messages.toml`.

    t("status.graded", "en")                     → "graded"
    t("note.output_truncated", "ja", cells="3")  → "出力が大きすぎるため省略しました（セル 3）"

Keys are dotted (`[status.graded]` in the file); the check kinds' reasons (`no_flow`, …) are
top-level keys. Every key has both languages (tests/unit/test_i18n.py). A missing English text falls
back to Japanese (an empty one is kept: a unit English omits), a missing key to the key itself; a
template whose arguments do not fit is shown unformatted rather than failing a report. The
assignment's own texts (titles, hints) live in its spec, its course content in
assignments/<id>/content.toml.
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Any

LANGS = ("ja", "en")
MESSAGES = Path(__file__).resolve().with_name("messages.toml")


@cache
def catalogue() -> dict[str, dict[str, str]]:
    """Every message by its dotted key."""
    found: dict[str, dict[str, str]] = {}

    def walk(table: dict[str, Any], prefix: str) -> None:
        for name, value in table.items():
            if isinstance(value, dict) and "ja" in value:
                found[prefix + name] = {k: str(v) for k, v in value.items()}
            elif isinstance(value, dict):
                walk(value, f"{prefix}{name}.")

    walk(tomllib.loads(MESSAGES.read_text(encoding="utf-8")), "")
    return found


def t(key: str, lang: str, /, **args: Any) -> str:
    """The message `key` in `lang`, with `{name}` placeholders filled from `args`."""
    entry = catalogue().get(key, {})
    template = entry[lang] if lang in entry else entry.get("ja", key)  # "" is a text (a unit English omits)
    try:
        return template.format(**args)
    except (KeyError, IndexError, ValueError):
        return template


def listing(items: list[str], lang: str) -> str:
    """Items joined the way the language lists them (`、` in Japanese)."""
    return t("list.separator", lang).join(items)


def both(key: str, /, **args: Any) -> str:
    """Japanese, then English: for messages printed before any language is chosen (CLI errors)."""
    return f"{t(key, 'ja', **args)} / {t(key, 'en', **args)}"
