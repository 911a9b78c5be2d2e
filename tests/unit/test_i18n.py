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


# ---------------------------------------------------------------- values and times in words (grader.report.phrases, grader.i18n.times)
def test_every_check_kind_has_phrases_and_unknown_values_stay_readable():
    from grader.judge.checks import KINDS
    from grader.report.phrases import KINDS as PHRASED, phrase

    assert set(KINDS) <= set(PHRASED), f"say these kinds' values in words: {sorted(set(KINDS) - set(PHRASED))}"
    for value in ({"a": 1, "b": [2, 3]}, [{"x": 1}], {"nested": {"deep": None}}, [1.5, "two"], True):
        for lang in LANGS:
            shown = phrase(value, "a_kind_added_later", lang)
            assert not re.search(r'[{}"]', shown), shown


def test_values_are_said_with_units_in_both_languages():
    from grader.report.phrases import phrase

    cases = [  # kind, value, Japanese, English
        ("first_batch_shape", {"x": [16, 28, 28, 1], "y": [16, 10]}, "(16, 28, 28, 1) の画像と (16, 10) のラベル",
         "images (16, 28, 28, 1) and labels (16, 10)"),
        ("first_batch_one_hot", {"one_hot": False, "classes": None, "shape": [16]}, "整数ラベル (16,)", "integer labels (16,)"),
        ("first_batch_one_hot", {"one_hot": True, "classes": 10, "shape": [16, 10]}, "one-hot ラベル (16, 10)",
         "one-hot labels (16, 10)"),
        ("written_answer", "≥ 30", "30 文字以上", "at least 30 characters"),
        ("evaluated_on_test_set", "≥ 95%", "テスト画像の 95% 以上", "at least 95% of the test images"),
        ("flow_length", 3750, "3,750 バッチ", "3,750 batches"),
        ("trusted_test_accuracy", 0.903, "0.903（90.3%）", "0.903 (90.3%)"),
        ("trusted_test_accuracy", "≥ 0.700 (reference 0.850)", "0.700（70.0%） 以上（模範解答 0.850（85.0%））",
         "at least 0.700 (70.0%) (reference 0.850 (85.0%))"),
        ("fit_uses_augmented_flow", "flow #4 (datagen #3)", "4 番目の flow()（3 番目の ImageDataGenerator）",
         "flow() no. 4 (ImageDataGenerator no. 3)"),
        ("data_source", "Fashion-MNIST ≥ 90%", "画像の 90% 以上が Fashion-MNIST", "at least 90% of the images from Fashion-MNIST"),
        ("input_scaled", {"min": 0, "max": 255, "dtype": "uint8"}, "画素値 0〜255（uint8）", "pixel values 0 to 255 (uint8)"),
        ("no_test_overlap", "≤ 0", "テスト画像 0 枚まで", "at most 0 test images"),
        ("augmentation_applied", {"rotation_range": [30]}, "rotation_range=30", "rotation_range=30"),
        ("fit_steps_per_epoch", None, "—", "—"),
    ]
    for kind, value, ja, en in cases:
        assert (phrase(value, kind, "ja"), phrase(value, kind, "en")) == (ja, en), kind
    # results written before checks carried their kind: recognised by their shape
    assert phrase({"x": [2, 3], "y": None}, "", "ja") == "(2, 3) の画像（ラベルなし）"


def test_times_are_in_the_course_zone_in_each_language():
    from grader.i18n.times import when

    assert when("2026-11-29T08:20:00+00:00", "ja") == "2026年11月29日 17:20 (JST)"
    assert when("2026-11-29T08:20:00+00:00", "en") == "29 Nov 2026 17:20 JST"
    assert when("2026-11-29T08:20:00", "en", "Europe/Berlin") == "29 Nov 2026 09:20 CET"  # no offset: UTC
    assert when("2026-11-29T08:20:00Z", "ja", "No/Such_Zone") == "2026年11月29日 17:20 (JST)"
    assert when("", "ja") == "—" and when("yesterday", "en") == "yesterday"
