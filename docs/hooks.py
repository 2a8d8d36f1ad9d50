"""MkDocs hook: lists written straight under a line of text render as lists, as GitHub shows them.

Python-Markdown starts a list only after a blank line, so "What it says:\\n- …" became one
paragraph on the site. A preprocessor (after the snippets are inserted, before fenced code is set
aside) adds that blank line outside fenced code blocks.
"""

from __future__ import annotations

import re

from markdown import Extension, Markdown
from markdown.preprocessors import Preprocessor

ITEM = re.compile(r"^ {0,3}(?:[-*+]|\d+\.) \S")
FENCE = re.compile(r"^ *(```|~~~)")


class ListsAfterText(Preprocessor):
    def run(self, lines: list[str]) -> list[str]:
        result: list[str] = []
        fenced = in_list = False  # in_list: since an item, only indented or blank lines
        for line in lines:
            if FENCE.match(line):
                fenced = not fenced
            elif not fenced and ITEM.match(line):
                if result and result[-1].strip() and not in_list:
                    result.append("")
                in_list = True
            elif not fenced and line.strip() and not line.startswith((" ", "\t")):
                in_list = False
            result.append(line)
        return result


class ListsAfterTextExtension(Extension):
    def extendMarkdown(self, md: Markdown) -> None:
        md.preprocessors.register(ListsAfterText(md), "lists_after_text", 28)  # snippets: 32, fences: 25


def on_config(config):
    config.markdown_extensions.append(ListsAfterTextExtension())
    return config
