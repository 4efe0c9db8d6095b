"""The offline training text: prose kept, code and tables dropped, stable order."""

from __future__ import annotations

import pytest

from splitserve.demo.corpus import (
    ChatExample,
    load_demo_corpus,
    module_docstrings,
    prose_paragraphs,
)

DOC = """The "if" statement
******************

The "if" statement is used for conditional execution: it selects exactly
one of the suites by evaluating the expressions one by one until one is
found to be true.

   if_stmt ::= "if" assignment_expression ":" suite
               ["else" ":" suite]

+-----------+-----------+
| Operation | Result    |
+-----------+-----------+

>>> print("hello world, this is a doctest line that is long enough")

Short line.
"""


def test_prose_paragraphs_keep_prose_and_join_lines() -> None:
    assert prose_paragraphs(DOC) == [
        'The "if" statement is used for conditional execution: it selects exactly one of '
        "the suites by evaluating the expressions one by one until one is found to be true."
    ]


def test_module_docstrings_name_objects_without_importing() -> None:
    source = '''"""Module doc."""
class Box:
    """A box."""
    def open(self):
        """Open it."""
def _hidden():
    """Hidden."""
raise SystemExit("importing this would exit")
'''
    assert module_docstrings(source, "pkg.mod") == [
        ("module", "pkg.mod", "Module doc."),
        ("class", "pkg.mod.Box", "A box."),
        ("function", "pkg.mod.Box.open", "Open it."),
        ("function", "pkg.mod._hidden", "Hidden."),
    ]
    assert module_docstrings("def broken(:\n", "x") == []


def test_full_corpus_is_large_prose_with_chat_pairs() -> None:
    corpus = load_demo_corpus()
    assert corpus.num_chars > 300_000  # enough text to learn some English from
    assert len(corpus.chat_examples) > 100
    assert all(isinstance(ex, ChatExample) and ex.answer for ex in corpus.chat_examples)
    questions = {ex.question for ex in corpus.chat_examples}
    assert "What does json.dumps() do?" in questions
    assert not any(q.split()[-2].startswith("_") for q in questions if q.endswith("do?"))
    lines = [line for doc in corpus.documents for line in doc.split("\n")]
    assert not any(line.startswith((">>>", "   ", "+---")) for line in lines)


def test_max_chars_takes_a_prefix_in_stable_order() -> None:
    small = load_demo_corpus(max_chars=20_000)
    again = load_demo_corpus(max_chars=20_000)
    assert small == again
    assert 0 < small.num_chars <= 20_000
    larger = load_demo_corpus(max_chars=40_000)
    assert larger.documents[: len(small.documents)] == small.documents


def test_bad_max_chars_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        load_demo_corpus(max_chars=0)
