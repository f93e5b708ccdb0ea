"""Text from the tracking store (run names, param and tag values) made safe to show: `plain` for
the terminal, comparison.json and the pictures (one line, no control characters, bounded),
`literal` for report.md (and what it prints) on top of that, so that no value reads as markup."""

import unicodedata

LONGEST = 100  # characters of one shown value: a DVC run name or a CPU tag fits, a flood does not
SPACES = "\n\r\t\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # line and paragraph breaks: shown as one space


def plain(value: object) -> str:
    """`value` on one line, its control and format characters (ANSI escapes, bidi overrides)
    written as escapes (`\\x1b`), cut to `LONGEST` characters."""
    text = str(value)[: 4 * LONGEST]  # more is cut anyway: do not escape a flood
    shown = "".join(_character(c) for c in text)
    return shown if len(shown) <= LONGEST else shown[: LONGEST - 3] + "..."


def _character(c: str) -> str:
    if c in SPACES:
        return " "
    if unicodedata.category(c) in ("Cc", "Cf", "Cs"):
        return c.encode("unicode_escape", "backslashreplace").decode("ascii")
    return c


def literal(text: str) -> str:
    """`text` (made of `plain` values and our own words) as literal markdown: HTML tags, table
    pipes, code spans, links and a leading heading mark escaped. Our own words need none of it,
    so a report without such values is unchanged."""
    for raw, escaped in (("\\", "\\\\"), ("|", "\\|"), ("`", "\\`"), ("<", "&lt;"), (">", "&gt;")):
        text = text.replace(raw, escaped)
    text = text.replace("](", "]\\(")
    return "\\" + text if text.startswith("#") else text
