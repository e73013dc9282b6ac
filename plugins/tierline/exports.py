"""Files tierline writes for people to open (CRM plans, exports): safe in a spreadsheet.

A cell whose text starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read as a
formula by Excel, LibreOffice and Google Sheets (CSV/formula injection, OWASP): a value from an
extract or a CRM, like a customer named ``=HYPERLINK(...)``, would run when an account manager
opens the file. Such text gets a leading ``'``, which spreadsheets show as text and do not
evaluate. Numbers stay numbers. Files the pipeline reads back as data (CRM pull extracts in the
extract layout) are not exports: a phone like ``+86 138...`` there is data, and stays as it is.
"""

from __future__ import annotations

from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> Any:
    """The value, with text a spreadsheet would evaluate made plain text."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def cells(value: Any) -> Any:
    """:func:`cell` on every text value of a JSON-like structure (keys are ours, not data)."""
    if isinstance(value, dict):
        return {k: cells(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [cells(v) for v in value]
    return cell(value)
