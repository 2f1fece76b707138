"""Griffe extension of the documentation build (``mkdocs.yml``): a Google-style ``Example:``
section, as metarec's docstrings write it (napoleon reads both spellings), is read as
``Examples:``, so that its ``>>>`` lines render as Python code. Griffe's Google parser knows only
the plural and would render the singular as a Markdown admonition, where ``>>>`` is a quote."""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^([ \t]*)Example:[ \t]*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
