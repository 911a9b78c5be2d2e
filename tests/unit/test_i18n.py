"""One message catalogue (grader/i18n/messages.toml): every key in both languages with the same
placeholders, every key the code asks for exists, and no inline ja/en switch is left in the grader."""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path

from grader.i18n import LANGS, catalogue, t

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "grader"
JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uff00-\uffef]")


def test_every_key_has_japanese_and_english_with_the_same_placeholders():
    for key, entry in catalogue().items():
        assert set(entry) == set(LANGS), f"{key}: {sorted(entry)}"
        assert entry["ja"].strip(), key  # (an English text may be empty: a Japanese unit such as 点)
        fields = [{f for _, f, _, _ in string.Formatter().parse(entry[lang]) if f} for lang in LANGS]
        assert fields[0] == fields[1], key
        assert not JAPANESE.search(entry["en"]), f"{key}: the English text has Japanese in it"


TEMPLATE_KEY = re.compile(r"(?<![\w.])t\('([\w.]+)'")


def keys_asked_for() -> dict[str, str]:
    """Literal keys passed to t(…) anywhere in the grader and its templates: {key: where}."""
    found = {key: f"templates/{p.name}" for p in (PACKAGE / "report" / "templates").glob("*.j2")
             for key in TEMPLATE_KEY.findall(p.read_text(encoding="utf-8"))}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "t" and node.args
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                found[node.args[0].value] = f"{path.relative_to(ROOT)}:{node.lineno}"
    return found


def test_every_key_the_code_asks_for_is_in_the_catalogue():
    asked = keys_asked_for()
    assert len(asked) > 60
    missing = {key: where for key, where in asked.items() if key not in catalogue()}
    assert not missing


def test_no_inline_language_switches_are_left_in_the_grader():
    """`"…" if ja else "…"`, `"…" if lang == "ja" else "…"` and hand-written `_t` helpers are how
    texts used to be chosen; Python code and the templates now ask the catalogue."""
    switch = re.compile(r"[\"')] if ja$|[\"'] if ja else|[\"'] if lang [!=]= [\"'](ja|en)[\"'] else|def _?t\(self|def _t\(|if ja:")
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in PACKAGE.rglob("*.py")
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if switch.search(line)]
    templates = [f"{p.name}:{n}" for p in (PACKAGE / "report" / "templates").glob("*.j2")
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if "if ja else" in line]
    assert found == [] and templates == []


def test_t_formats_falls_back_and_never_raises():
    assert t("run.timeout", "en", scope="cell") == "Time limit exceeded (cell); graded on what ran before."
    assert t("run.timeout", "fr", scope="セル").startswith("制限時間を超えました")
    assert t("no.such.key", "en") == "no.such.key"
    assert t("page.points_unit", "en") == "" and t("page.points_unit", "ja") == " 点"  # empty English is kept
    assert t("run.timeout", "en") == "Time limit exceeded ({scope}); graded on what ran before."
