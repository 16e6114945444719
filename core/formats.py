"""Money, numbers and dates as a locale writes them: the pure functions behind the template
filters `money`, `number`, `date` and `datetime` (Babel).

Each takes a plain value and the locale and timezone to write it for, and returns text. The
sandbox (`expressions.Sandbox`) binds them to the locale of the template file being rendered
and the customer's timezone, both held by the evaluation's `Scope`. Nothing (None, a missing
name) prints as nothing; a value that is not a number or a moment is a `ValueError` saying
which filter and what it got, so the message fails to render with that reason.

A sum shows its cents only when it has some (`1 290 ₽`, `79,90 €`). Where a locale's own
symbol for a currency is its code (Ukrainian and EUR, English and RUB), the short symbol is
used instead (`₽`), as shops print them. Babel separates groups and symbols with no-break
spaces, so a price never breaks across two lines.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime, format_time, get_datetime_format
from babel.numbers import NumberPattern, format_currency, format_decimal, parse_pattern

# Short symbols for the currencies whose symbol some locale writes as the code.
SHORT_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "RUB": "₽", "UAH": "₴", "KZT": "₸", "BYN": "Br"}
DATE_FORMATS = ("short", "medium", "long", "full")
MAX_PATTERN = 64  # characters of a date pattern such as 'd MMMM'
MAX_DIGITS = 18  # digits before the point: a price, not 1e99999
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")


@functools.lru_cache(maxsize=256)
def locale_of(name: str | None, fallback: str = "en") -> Locale:
    """The Babel locale of `ru`, `en_GB` or `pt-BR`; `fallback` for none or one Babel does not know.
    Remembered: every `money`, `number` and `date` a message writes asks for its locale."""
    for candidate in (name, fallback, "en"):
        try:
            return Locale.parse(str(candidate).replace("-", "_"))
        except (UnknownLocaleError, ValueError, TypeError):
            continue
    raise AssertionError("Babel always knows en")


def _number(value: Any, what: str) -> Decimal | None:
    """`value` as a number, None for nothing; ValueError for what is not a number."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a number, got {value!r}")
    if isinstance(value, int | float | Decimal):
        number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    elif isinstance(value, str) and len(value) <= 40:
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{what}: expected a number, got '{value}'") from None
    else:
        shown = f"'{value[:40]}...'" if isinstance(value, str) else f"a {type(value).__name__}"
        raise ValueError(f"{what}: expected a number, got {shown}")
    if not number.is_finite() or number.adjusted() > MAX_DIGITS:
        raise ValueError(f"{what}: expected a number of at most {MAX_DIGITS} digits, got {value!r}")
    return number


def money(value: Any, currency: Any, locale: Locale) -> str:
    """`value` in `currency` (a code such as EUR) as `locale` writes it: `79,90 €`, `€79.90`."""
    number = _number(value, "money")
    if number is None:
        return ""
    if currency is None:
        return number_text(number, locale, 2)
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise ValueError(f"money: the currency must be a code such as EUR or RUB, got {currency!r}")
    code = currency.upper()
    whole = number == number.to_integral_value()
    pattern = _whole(locale) if whole else None
    text = format_currency(number, code, format=pattern, locale=locale, currency_digits=not whole)
    symbol = locale.currency_symbols.get(code, code)
    if symbol == code and code in SHORT_SYMBOLS:
        text = text.replace(code, SHORT_SYMBOLS[code])
    return text


@functools.lru_cache(maxsize=256)
def _whole(locale: Locale) -> NumberPattern:
    """The locale's currency pattern without decimals: `#,##0 ¤` for `#,##0.00 ¤` (read once a locale)."""
    pattern = locale.currency_formats["standard"].pattern
    return parse_pattern(re.sub(r"\.0+", "", pattern))


def number_text(value: Any, locale: Locale, digits: Any = None) -> str:
    """A number with the locale's separators (`1 234,5`); `digits` fixes the decimals shown."""
    number = _number(value, "number")
    if number is None:
        return ""
    if digits is None:
        return format_decimal(number, locale=locale)
    if not isinstance(digits, int) or isinstance(digits, bool) or not 0 <= digits <= 10:
        raise ValueError(f"number: the digits must be a whole number from 0 to 10, got {digits!r}")
    pattern = "#,##0" + ("." + "0" * digits if digits else "")
    return format_decimal(number, format=pattern, locale=locale, decimal_quantization=True)


def moment(value: Any, what: str) -> datetime | date | None:
    """`value` as a datetime (naive ones are UTC) or a date; ISO text is read; None for nothing."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return value
    if isinstance(value, str) and len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            example = "2026-03-03T10:00:00Z"
            raise ValueError(f"{what}: expected a date or a time such as {example}, got '{value}'") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise ValueError(f"{what}: expected a date or a time, got a {type(value).__name__}")


def _pattern(format: Any, what: str) -> str:
    if not isinstance(format, str) or not format or len(format) > MAX_PATTERN:
        raise ValueError(
            f"{what}: the format is one of {', '.join(DATE_FORMATS)} or a pattern such as 'd MMMM' "
            f"of at most {MAX_PATTERN} characters, got {format!r}"
        )
    return format


def date_text(value: Any, locale: Locale, zone: tzinfo, format: Any = "long") -> str:
    """The day of `value` on the customer's clock (`zone`): `March 3, 2026`; a `format` (`short`...
    or a pattern such as `d MMMM`) replaces that default."""
    found = moment(value, "date")
    if found is None:
        return ""
    day = found.astimezone(zone).date() if isinstance(found, datetime) else found
    return _formatted(format_date, day, _pattern(format, "date"), "date", locale=locale)


def datetime_text(value: Any, locale: Locale, zone: tzinfo, format: Any = None) -> str:
    """The day and time of `value` on the customer's clock: `March 4, 2026, 12:30 AM`; a
    `format` (`short`... or a pattern) replaces that default."""
    found = moment(value, "datetime")
    if found is None:
        return ""
    if not isinstance(found, datetime):
        found = datetime.combine(found, datetime.min.time(), zone)
    local = found.astimezone(zone)
    if format is None:
        combined = get_datetime_format("medium", locale=locale)
        day = format_date(local, "long", locale=locale)
        return combined.replace("{1}", day).replace("{0}", format_time(local, "short", locale=locale))
    pattern = _pattern(format, "datetime")
    return _formatted(format_datetime, local, pattern, "datetime", tzinfo=local.tzinfo, locale=locale)


def _formatted(function: Callable[..., str], value: Any, pattern: str, what: str, **options: Any) -> str:
    """Babel's answer for a pattern from a template; its errors told as the filter's."""
    try:
        return function(value, pattern, **options)
    except (ValueError, LookupError, AttributeError, TypeError) as exc:
        # A pattern Babel cannot apply: a field too long, a time zone field on a day...
        raise ValueError(f"{what}: cannot write the format {pattern!r}: {exc}") from None
