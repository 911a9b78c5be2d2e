"""Student ids: one set of rules for `pull`, `grade`, `check` and the review app.

An id is the name a student's notebook (or folder) was handed in under, kept as written —
`課題8_山田太郎` is the id `課題8_山田太郎` — only normalised to Unicode NFC (macOS writes
decomposed names; both spellings are one id). It becomes a folder name in OUT, a URL path in the
review app and a row of grades.csv, so some names are refused, each with a message that says why:

  * empty, longer than MAX_BYTES, or not valid UTF-8 (a name Python could only decode with
    surrogate escapes);
  * path separators, characters other systems refuse in file names and the two that break the
    relative links of the class pages: / \\ : * ? " < > | # %
  * control and format characters (newlines, tabs, NUL, bidirectional overrides, zero-width
    characters), unassigned and private-use code points;
  * a leading dot (hidden files, `.` and `..`), leading or trailing whitespace of any kind
    (U+3000 included), a trailing dot;
  * reserved names: see below.

Reserved names. Nothing a student can name may clash with a file or folder the grader writes at
OUT's top level, now or later. The rule, compared case-insensitively on the part before the
first dot (the "stem"):
  * every stem the grader uses: RESERVED_STEMS (index.html, grades.csv, gradebook.sqlite and
    its -wal/-shm/-journal files, submissions.json, similarity.json, similarity/ …);
  * any stem starting with RESERVED_PREFIX ("grader"): a future grader file must be named either
    with a stem from RESERVED_STEMS or `grader…` (tests/test_student_ids.py enumerates what
    `grade`, `review` and `similarity` write at OUT's top level and fails on anything else);
  * Windows device names (CON, NUL, COM1 …), so OUT can be copied to any machine.

Collisions. Two handed-in names whose NFKC case-folded forms are equal (`S1` and `s1`, `ｓ1` and
`s1`, `s1.ipynb` and the folder `s1/`) would land in one folder on some file systems or look the
same to a TA: neither is graded, both are reported.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from grader.errors import ConfigError

MAX_BYTES = 120  # UTF-8 bytes: `<a>__<b>.html` of two ids must stay under NAME_MAX (255)
FORBIDDEN_CHARACTERS = set('/\\:*?"<>|#%')  # path, Windows and URL (#fragment, %escape) characters
REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
RESERVED_STEMS = frozenset({
    "index", "grades", "gradebook", "submissions", "similarity", "review", "report", "result", "results",
    "evidence", "executed", "refused", "kernel", "predict", "calibration", "reference", "selfcheck",
})
RESERVED_PREFIX = "grader"
WINDOWS_DEVICES = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                             *(f"lpt{i}" for i in range(1, 10))})


class InvalidStudentId(ConfigError):
    """A student id given on the command line (or in a URL) that the rules refuse."""


@dataclass(frozen=True)
class Refusal:
    """A handed-in name that is not graded, and why (Japanese first, then English)."""

    name: str  # as found (printable: control characters shown escaped)
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason}


def normalise(raw: str) -> str:
    return unicodedata.normalize("NFC", raw)


def problem(raw: str) -> str | None:
    """Why `raw` (a file stem or folder name) cannot be a student id, or None when it can."""
    if not isinstance(raw, str) or raw == "":
        return "空の名前 / empty name"
    try:
        encoded = raw.encode("utf-8")
    except UnicodeEncodeError:
        return "UTF-8 でない名前（文字化け）/ the name is not valid UTF-8"
    name = normalise(raw)
    if len(encoded) > MAX_BYTES:
        return f"名前が長すぎます（{len(encoded)} バイト > {MAX_BYTES}）/ name too long"
    bad = sorted({c for c in name if c in FORBIDDEN_CHARACTERS})
    if bad:
        return f"使えない文字 {' '.join(bad)} を含みます / contains {' '.join(bad)} (path or reserved characters)"
    controls = sorted({c for c in name if unicodedata.category(c) in REFUSED_CATEGORIES})
    if controls:
        shown = ", ".join(f"U+{ord(c):04X}" for c in controls)
        return f"改行などの制御文字・不可視文字（{shown}）を含みます / contains control or invisible characters ({shown})"
    if name.startswith("."):
        return "先頭が「.」です / starts with a dot"
    if name[0].isspace() or name[-1].isspace():
        return "先頭か末尾に空白（全角空白を含む）があります / leading or trailing whitespace"
    if name.endswith("."):
        return "末尾が「.」です / ends with a dot"
    stem = name.split(".", 1)[0].casefold()
    if stem in RESERVED_STEMS or stem.startswith(RESERVED_PREFIX):
        return f"採点システムが使う名前（{stem}）です / reserved for the grader's own files"
    if stem in WINDOWS_DEVICES:
        return f"Windows の予約名（{stem.upper()}）です / a reserved device name"
    return None


def student_id(raw: str) -> str:
    """The id for a handed-in name (NFC), or InvalidStudentId with the reason."""
    why = problem(raw)
    if why:
        raise InvalidStudentId(f"学生 ID {printable(raw)} は使えません: {why}")
    return normalise(raw)


def is_valid(raw: str) -> bool:
    return problem(raw) is None


def clash_key(student: str) -> str:
    """Ids with the same key are one id to a case-insensitive file system or a TA's eye."""
    return unicodedata.normalize("NFKC", student).casefold()


def printable(raw: str) -> str:
    """The name in 「」, with anything invisible or blank but a plain space escaped (one-line messages)."""
    return f"「{escaped(raw)}」"


def escaped(raw: str) -> str:
    """The name with anything invisible or blank but a plain space escaped as \\uXXXX."""
    def shown(c: str) -> str:
        if unicodedata.category(c) in REFUSED_CATEGORIES or (c.isspace() and c != " "):
            return f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}"
        return c
    return "".join(shown(c) for c in raw)


def group_sources(named: dict[str, list[str]]) -> tuple[dict[str, str], list[Refusal]]:
    """{raw name: [sources]} → ({id: raw name} for the usable ones, refusals).

    `named` maps each distinct handed-in name to what carried it (file and folder names), so a
    name that two sources share (`s1.ipynb` and `s1/`) and two names with one clash key are
    refused together.
    """
    refused: list[Refusal] = []
    by_key: dict[str, list[str]] = {}
    for raw, sources in named.items():
        why = problem(raw)
        if why:
            refused += [Refusal(escaped(source), why) for source in sources]
            continue
        by_key.setdefault(clash_key(normalise(raw)), []).append(raw)
    usable: dict[str, str] = {}
    for raws in by_key.values():
        sources = sorted(s for raw in raws for s in named[raw])
        if len(sources) > 1:
            listed = ", ".join(printable(s) for s in sources)
            refused += [Refusal(escaped(s), f"同じ学生 ID になる提出が複数あります（{listed}）。どれも採点しません / "
                                              f"several submissions map to one id ({listed}); none is graded")
                        for s in sources]
            continue
        usable[normalise(raws[0])] = raws[0]
    return usable, sorted(refused, key=lambda r: r.name)
