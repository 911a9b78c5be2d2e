"""The course's content for one assignment, as data: `assignments/<id>/content.toml`.

The data set's name and class names, the groups of classes the slides talk about, and the slides'
commentary that the reports show beside their figures. Nothing here decides a score; the reports
are redrawn when it changes (its digest is part of every report key). An assignment without the
file gets plain class numbers, no groups and no commentary.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.assignment.spec import Text
from grader.errors import ConfigError

CONTENT_FILE = "content.toml"


@dataclass(frozen=True)
class ClassGroup:
    id: str
    members: tuple[int, ...]
    color: str
    name: Text  # in sentences ("shoes 0.62")
    legend: Text  # in the figure's legend, with what the slides say about the group


@dataclass(frozen=True)
class Content:
    dataset: str = ""
    classes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # language → the name of each label
    groups: tuple[ClassGroup, ...] = ()
    commentary: dict[str, Text] = field(default_factory=dict)
    digest: str = ""  # of the file, for report keys

    @property
    def size(self) -> int:
        """How many classes have names (0: none)."""
        return max((len(names) for names in self.classes.values()), default=0)

    def class_names(self, lang: str, count: int) -> list[str]:
        """`count` names in `lang` (Japanese first, then English), label numbers where none is given."""
        names = self.classes.get(lang) or self.classes.get("ja") or ()
        return [names[i] if i < len(names) else str(i) for i in range(count)]

    def group_of(self, label: int) -> ClassGroup | None:
        return next((g for g in self.groups if label in g.members), None)

    def comment(self, key: str, lang: str) -> str:
        text = self.commentary.get(key)
        return text.get(lang) if text else ""


def load_content(assignment_root: Path) -> Content:
    """`assignment_root/content.toml`, or neutral content when there is none."""
    path = assignment_root / CONTENT_FILE
    if not path.is_file():
        return Content()
    source = path.read_bytes()
    try:
        raw = tomllib.loads(source.decode("utf-8"))
        return parse_content(raw, where=str(path), digest=hashlib.sha256(source).hexdigest()[:16])
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_content(raw: dict[str, Any], *, where: str, digest: str = "") -> Content:
    dataset = raw.get("dataset", {})
    classes = {lang: tuple(str(n) for n in names) for lang, names in dataset.get("classes", {}).items()}
    groups = tuple(ClassGroup(id=g["id"], members=tuple(int(m) for m in g["members"]),
                              color=str(g.get("color", "#777")),
                              name=Text.parse(g["name"], f"{where} groups.{g['id']}.name"),
                              legend=Text.parse(g.get("legend", g["name"]), f"{where} groups.{g['id']}.legend"))
                   for g in raw.get("groups", []))
    commentary = {key: Text.parse(value, f"{where} commentary.{key}")
                  for key, value in raw.get("commentary", {}).items()}
    return Content(dataset=str(dataset.get("name", "")), classes=classes, groups=groups, commentary=commentary,
                   digest=digest)
