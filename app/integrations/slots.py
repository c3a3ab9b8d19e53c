"""Free meeting slots from busy intervals: a pure function, so the calendar logic is testable
without a calendar."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

Interval = tuple[datetime, datetime]


@dataclass(frozen=True)
class BusinessHours:
    tz: ZoneInfo
    day_start: time = time(9)
    day_end: time = time(17)
    workdays: frozenset[int] = frozenset(range(5))  # Monday = 0

    def __post_init__(self) -> None:
        if self.day_end <= self.day_start:
            raise ValueError("business hours must end after they start")

    def opening(self, day: date) -> datetime:
        return datetime.combine(day, self.day_start, tzinfo=self.tz)

    def closing(self, day: date) -> datetime:
        return datetime.combine(day, self.day_end, tzinfo=self.tz)

    def contains(self, start: datetime, end: datetime) -> bool:
        day = start.astimezone(self.tz).date()
        return day.weekday() in self.workdays and self.opening(day) <= start < end <= self.closing(
            day
        )


def business_days(earliest: datetime, hours: BusinessHours, count: int) -> list[date]:
    """The next `count` working days, starting with `earliest`'s local date."""
    days: list[date] = []
    day = earliest.astimezone(hours.tz).date()
    while hours.workdays and len(days) < count:
        if day.weekday() in hours.workdays:
            days.append(day)
        day += timedelta(days=1)
    return days


def free_slots(
    busy: Iterable[Interval],
    *,
    earliest: datetime,
    hours: BusinessHours,
    days: int,
    duration: timedelta = timedelta(minutes=30),
    step: timedelta = timedelta(minutes=30),
    limit: int = 6,
    per_day: int = 2,
) -> list[Interval]:
    """Up to `limit` slots of `duration`, aligned to `step` from opening time, inside business
    hours on the next `days` working days, not before `earliest`, overlapping no busy interval.

    Each day is cut into `per_day` equal parts and the first free slot of each part is offered,
    so a visitor sees a morning and an afternoon rather than 9:00 and 9:30.
    """
    if earliest.tzinfo is None:
        raise ValueError("earliest must be timezone-aware")
    taken = sorted((s, e) for s, e in busy if e > s)
    slots: list[Interval] = []
    for day in business_days(earliest, hours, days):
        opening, closing = hours.opening(day), hours.closing(day)
        part = (closing - opening) / max(per_day, 1)
        for index in range(max(per_day, 1)):
            start = opening + step * _steps(index * part, step)
            part_end = opening + (index + 1) * part
            while start < part_end and start + duration <= closing:
                end = start + duration
                if start >= earliest and not any(s < end and start < e for s, e in taken):
                    slots.append((start, end))
                    if len(slots) >= limit:
                        return slots
                    break
                start += step
    return slots


def _steps(offset: timedelta, step: timedelta) -> int:
    """Whole steps needed to reach `offset` (rounded up, so parts never share a slot)."""
    return -(-offset // step)
