"""Counts in messages read as English: `1 zone`, `2 zones`, `0 workers`."""

from __future__ import annotations


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    return f"{count} {noun if count == 1 else plural_form or noun + 's'}"
