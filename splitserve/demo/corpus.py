"""Offline English text for the demo model: the Python docs that ship with every Python.

Two sources, both present wherever CPython is installed and neither downloaded:

* `pydoc_data.topics`: the language reference topics behind `help("if")` (~0.5 MB);
* docstrings of the standard library's own modules, read with `ast` from the source files
  (never imported, so no module's import-time side effects run).

Both are reST-flavoured and full of grammar snippets, tables and code. We keep the prose:
a paragraph survives when it is unindented text made mostly of words; its hard line breaks
are joined so the model learns sentences rather than 72-column wrapping. The result depends
only on the Python version's files, so a build on the same Python sees the same text.
"""

from __future__ import annotations

import ast
import re
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Standard library packages whose docstrings are mostly prose. Test suites, IDLE, tkinter
# and the like add code-heavy or repetitive text, so only these folders are read (plus the
# top-level modules).
_STDLIB_PACKAGES = (
    "asyncio",
    "collections",
    "concurrent",
    "email",
    "html",
    "http",
    "importlib",
    "json",
    "logging",
    "multiprocessing",
    "unittest",
    "urllib",
    "xml",
)
_MIN_PARAGRAPH_CHARS = 60
_MIN_LETTER_FRACTION = 0.72
_HEADING_RULE = re.compile(r"^([*=\-~^\"'#+])\1{2,}\s*$")
_WORD = re.compile(r"[A-Za-z]{2,}")


def is_prose(paragraph: str) -> bool:
    """Whether a blank-line separated block reads as English prose (not code or a table)."""
    lines = paragraph.splitlines()
    if not lines or any(line.startswith((" ", "\t")) for line in lines):
        return False  # indented blocks are code samples, grammar rules or quotes
    text = " ".join(lines)
    if len(text) < _MIN_PARAGRAPH_CHARS:
        return False
    if any(_HEADING_RULE.match(line) for line in lines):
        return False
    if text.lstrip().startswith((">>>", "|", "+", "...", "..", ":")):
        return False
    letters = sum(ch.isalpha() or ch == " " for ch in text)
    if letters / len(text) < _MIN_LETTER_FRACTION:
        return False
    return len(_WORD.findall(text)) >= 8


def prose_paragraphs(text: str) -> list[str]:
    """Split text on blank lines, keep the prose, and join each paragraph's lines."""
    kept: list[str] = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        block = block.strip("\n")
        if is_prose(block):
            kept.append(" ".join(line.strip() for line in block.splitlines()))
    return kept


@dataclass(frozen=True)
class ChatExample:
    """One question/answer pair for the chat-formatted share of the training text."""

    question: str
    answer: str


@dataclass(frozen=True)
class DemoCorpus:
    """Plain documents (paragraphs joined by blank lines) and chat pairs, both ordered."""

    documents: list[str]
    chat_examples: list[ChatExample]

    @property
    def num_chars(self) -> int:
        return sum(map(len, self.documents)) + sum(
            len(ex.question) + len(ex.answer) for ex in self.chat_examples
        )


def pydoc_topic_docs() -> list[tuple[str, list[str]]]:
    """(title, prose paragraphs) per Python reference topic, in sorted topic order."""
    from pydoc_data.topics import topics

    docs: list[tuple[str, list[str]]] = []
    for name in sorted(topics):
        text = topics[name]
        title = text.strip().splitlines()[0].strip() if text.strip() else name
        docs.append((title, prose_paragraphs(text)))
    return docs


def _collect_docstrings(node: ast.AST, prefix: str, out: list[tuple[str, str, str]]) -> None:
    """Append (kind, dotted name, docstring) for every documented class/function below node."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}.{child.name}"
            doc = ast.get_docstring(child, clean=True)
            if doc:
                out.append(("class" if isinstance(child, ast.ClassDef) else "function", name, doc))
            _collect_docstrings(child, name, out)


def module_docstrings(source: str, module: str) -> list[tuple[str, str, str]]:
    """(kind, dotted name, docstring) of a module's source in file order; kind is
    "module", "class" or "function". Unparsable source yields nothing."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    found: list[tuple[str, str, str]] = []
    doc = ast.get_docstring(tree, clean=True)
    if doc:
        found.append(("module", module, doc))
    _collect_docstrings(tree, module, found)
    return found


def stdlib_source_files(stdlib_dir: Path | None = None) -> list[tuple[str, Path]]:
    """(module name, path) of the top-level stdlib modules and the listed packages' files,
    sorted so that every build reads them in the same order."""
    root = Path(stdlib_dir or sysconfig.get_paths()["stdlib"])
    files = [(path.stem, path) for path in sorted(root.glob("*.py"))]
    for package in _STDLIB_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if any("test" in part for part in parts[1:]):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files.append((".".join(parts), path))
    return files


def _question(kind: str, name: str) -> str:
    if kind == "module":
        return f"What is the {name} module for?"
    if kind == "class":
        return f"What is {name}?"
    return f"What does {name}() do?"


def _is_public(dotted_name: str) -> bool:
    return not any(part.startswith("_") for part in dotted_name.split("."))


def _corpus_items() -> Iterator[str | ChatExample]:
    """Documents and chat pairs in corpus order, duplicates of earlier paragraphs dropped."""
    seen: set[str] = set()

    def fresh(paragraphs: list[str]) -> list[str]:
        new = [p for p in paragraphs if p not in seen]
        seen.update(new)
        return new

    for title, paragraphs in pydoc_topic_docs():
        new = fresh(paragraphs)
        if new:
            yield "\n\n".join(new)
            yield ChatExample(f"Tell me about {title}.", new[0])
    for module, path in stdlib_source_files():
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for kind, name, doc in module_docstrings(source, module):
            paragraphs = prose_paragraphs(doc)
            new = fresh(paragraphs)
            if new:
                yield "\n\n".join(new)
            if paragraphs and _is_public(name):
                yield ChatExample(_question(kind, name), paragraphs[0])


def load_demo_corpus(max_chars: int | None = None) -> DemoCorpus:
    """The demo training text: reference topics, then stdlib docstrings, with chat pairs.

    Duplicate paragraphs are dropped (first occurrence kept). Each public documented object
    whose docstring opens with a prose paragraph also yields a chat pair ("What does
    json.dumps() do?" -> that paragraph), so the chat template sees some use in training.
    `max_chars` caps the total text, taken in order (reading stops there); None keeps all.
    """
    if max_chars is not None and max_chars <= 0:
        raise ValueError(f"max_chars must be positive or None, got {max_chars}")
    documents: list[str] = []
    chat_examples: list[ChatExample] = []
    total_chars = 0
    for item in _corpus_items():
        if isinstance(item, ChatExample):
            total_chars += len(item.question) + len(item.answer)
        else:
            total_chars += len(item)
        if max_chars is not None and total_chars > max_chars:
            break
        if isinstance(item, ChatExample):
            chat_examples.append(item)
        else:
            documents.append(item)
    return DemoCorpus(documents, chat_examples)
