"""Moments as people read them: in the course's time zone, in the reader's language.

    when("2026-11-29T08:20:00+00:00", "ja")  → "2026年11月29日 17:20 (JST)"
    when("2026-11-29T08:20:00+00:00", "en")  → "29 Nov 2026 17:20 JST"

Stored times stay UTC ISO strings (result.json, the gradebook); only what a page shows is converted.
A time without an offset is taken as UTC (the grader writes UTC). The zone is the course's
(`timezone` in assignments/course.toml, grader.assignment.paths.course_timezone).
"""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from grader.i18n import t

DEFAULT_ZONE = "Asia/Tokyo"


def zone_info(name: str | None) -> ZoneInfo:
    """The zone called `name`; the default zone for an unknown or empty name (a page never fails on it)."""
    try:
        return ZoneInfo(name or DEFAULT_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_ZONE)


def when(iso: object, lang: str, zone: str | None = None) -> str:
    """An ISO moment as a date and time in `zone` (default Asia/Tokyo); "—" for nothing, the text itself
    for something that is not a moment."""
    if not iso:
        return "—"
    try:
        moment = datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    local = moment.astimezone(zone_info(zone))
    month = t("time.months", lang).split()[local.month - 1]
    return t("time.moment", lang, year=local.year, month=month, day=local.day,
             time=local.strftime("%H:%M"), zone=local.tzname() or "")
