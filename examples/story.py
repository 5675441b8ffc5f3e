"""Reads a story file into chapters of sentences.

The format (the C example, examples/c/narrate.c, parses it by the same rules):

* ``# Title``: the story's title, optional, first.
* ``## Chapter heading``: starts a chapter; every other non-blank line is the
  chapter's text, lines joined by a space.
* A sentence ends at ``.``, ``!`` or ``?``, optionally followed by closing
  quotes (``"`` or ``'``), then whitespace or the end of the chapter.
* ``[voice:NAME]`` at the start of a sentence speaks it with the espeak-ng
  voice NAME (``en+f3``, ``en-us``...); the markup itself is not spoken.
  NAME is checked by the engine, not here: a voice espeak-ng does not have
  makes that sentence a segment error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

#: Characters allowed in a voice name (espeak-ng voice files, ``+variant`` suffixes).
VOICE_NAME = re.compile(r"[A-Za-z0-9_+\-]+")
SENTENCE_END = re.compile(r"[.!?][\"']*(?=\s|$)")


class StoryFormatError(ValueError):
    """The story file breaks the format; the message says where and why."""


@dataclass(frozen=True)
class Sentence:
    """One sentence: the text to speak and the voice to speak it with (None: the default)."""

    text: str
    voice: str | None = None


@dataclass
class Chapter:
    """A chapter heading and its sentences, in order."""

    title: str
    sentences: list[Sentence] = field(default_factory=list)


def split_sentences(text: str, where: str) -> list[Sentence]:
    """Splits one chapter's text into sentences; ``where`` names it in error messages."""
    sentences = []
    start = 0
    text = text.strip()
    while start < len(text):
        end_match = SENTENCE_END.search(text, start)
        end = end_match.end() if end_match else len(text)
        sentences.append(parse_markup(text[start:end].strip(), where, len(sentences) + 1))
        start = end
        while start < len(text) and text[start].isspace():
            start += 1
    return sentences


def parse_markup(raw: str, where: str, number: int) -> Sentence:
    """Takes a leading ``[voice:NAME]`` off a sentence."""
    if not raw.startswith("["):
        return Sentence(raw)
    close = raw.find("]")
    markup = raw[1:close] if close > 0 else raw[1:]
    key, _, name = markup.partition(":")
    if close < 0 or key != "voice" or not VOICE_NAME.fullmatch(name):
        raise StoryFormatError(
            f"{where}, sentence {number}: markup must be [voice:NAME] with NAME made of "
            f"letters, digits, '_', '+' or '-', got {raw[:40]!r}"
        )
    text = raw[close + 1 :].strip()
    if not text:
        raise StoryFormatError(f"{where}, sentence {number}: [voice:{name}] with no text after it")
    return Sentence(text, name)


def parse_story(source: str, name: str = "story") -> tuple[str, list[Chapter]]:
    """Parses a story's text into (title, chapters); raises StoryFormatError for bad input."""
    title = ""
    chapters: list[Chapter] = []
    bodies: list[list[str]] = []
    for line_number, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("## "):
            chapters.append(Chapter(stripped[3:].strip()))
            bodies.append([])
        elif stripped.startswith("# ") and not chapters and not title:
            title = stripped[2:].strip()
        elif not chapters:
            raise StoryFormatError(
                f"{name}:{line_number}: text before the first chapter heading ('## ...')"
            )
        else:
            bodies[-1].append(stripped)
    if not chapters:
        raise StoryFormatError(f"{name}: no chapter found (a chapter starts with a '## ' line)")
    for chapter, body in zip(chapters, bodies):
        where = f"{name}: chapter {chapter.title!r}"
        if not chapter.title:
            raise StoryFormatError(f"{where}: empty chapter heading")
        chapter.sentences = split_sentences(" ".join(body), where)
        if not chapter.sentences:
            raise StoryFormatError(f"{where}: the chapter has no text")
    return title, chapters


def load_story(path: str | Path) -> tuple[str, list[Chapter]]:
    """Reads and parses a UTF-8 story file."""
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise StoryFormatError(f"cannot read {path}: {error}") from error
    return parse_story(source, str(path))


def slug(title: str) -> str:
    """A file-name-safe form of a chapter title: 'The Fox & the Grapes' -> 'the-fox-the-grapes'."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "chapter"
