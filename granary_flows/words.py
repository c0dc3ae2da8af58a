"""The base of the enums that hold a specification's words (statuses, kinds, categories)."""

from __future__ import annotations

from enum import Enum


class SpecWord(str, Enum):
    """A word a specification defines: it compares, prints and serializes as the word itself.

    Example:
        >>> class Color(SpecWord):
        ...     RED = "red"
        >>> f"{Color.RED}", str(Color.RED), Color.RED == "red"
        ('red', 'red', True)
    """

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)
