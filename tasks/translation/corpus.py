"""Parallel sentence corpora: the Ding German-English dictionary, or any `source<TAB>target` file.

Every line that is not kept is counted under a reason; the counts travel with the run.
The split into train / validation / test goes by a hash of the source sentence, so a pair (and
every pair sharing its source) lands in one split only, whatever the order of the file.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tasks.data import DataError, data_dir_from

DING_NAMES = ("translation/ding-de-en.txt.gz", "translation/ding-de-en.txt")
DING_SYSTEM_PATH = Path("/usr/share/trans/de-en")  # Debian/Ubuntu: apt-get install trans-de-en
SENTENCE_END = (".", "!", "?")
ANNOTATION = re.compile(r"\s*(\{[^}]*\}|\[[^\]]*\])")  # {grammar} and [register, field]
ENTRY_NOTES = re.compile(r"\([^)]*\)|<>")
ENTRY_BRACKETS = set("{}[]()")  # an entry left with one (nested or unbalanced notes) is not kept
WORD = re.compile(r"\w+")  # words, to compare an entry's source with the sentences'
SPLIT_BUCKETS = 1000
TEST_BUCKETS, VALIDATION_BUCKETS = 50, 50  # 5 % test, 5 % validation, 90 % train
MIN_PAIRS = 100


@dataclass
class Corpus:
    path: Path
    pairs: list[tuple[str, str]]
    counts: Counter = field(default_factory=Counter)  # reason -> lines or alternatives not kept
    md5: str = ""
    # a dictionary's word and phrase entries (not sentences), which training may add: see `entries_to_add`
    entries: list[tuple[str, str]] = field(default_factory=list)
    entries_trained_on: int = 0  # set by the data module that trains on some

    def summary(self) -> dict[str, object]:
        summary = {"path": str(self.path), "md5": self.md5, "pairs": len(self.pairs), "not kept": dict(self.counts)}
        if self.entries_trained_on:
            summary["dictionary entries trained on"] = self.entries_trained_on
        return summary


def _lines(path: Path) -> tuple[list[bytes], str]:
    """The raw lines of a plain or gzip file, and the md5 of its uncompressed bytes."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: cannot read it ({err})") from err
    if not raw.strip():
        raise DataError(f"{path}: the file is empty")
    return raw.splitlines(), hashlib.md5(raw).hexdigest()


def _decode(line: bytes, path: Path, number: int) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}:{number}: not UTF-8 ({err.reason} at byte {err.start}): {line[:80]!r}") from None


def _dedupe(corpus: Corpus) -> Corpus:
    unique = list(dict.fromkeys(corpus.pairs))
    if len(unique) < len(corpus.pairs):
        corpus.counts["duplicate pairs dropped"] += len(corpus.pairs) - len(unique)
    corpus.pairs = unique
    return corpus


def _clean(text: str) -> str:
    return " ".join(ANNOTATION.sub("", text).split())


def _clean_entry(text: str) -> str:
    """An entry as a phrase: annotations, bracketed notes "(von jdm./etw.)" and the `<>` marks of
    separable parts removed."""
    return " ".join(ENTRY_NOTES.sub(" ", _clean(text)).split())


@functools.lru_cache(maxsize=4)
def _parse_ding_cached(path: Path, mtime: float, entries: bool) -> Corpus:
    lines, md5 = _lines(path)
    corpus = Corpus(path, [], Counter(), md5)
    for number, line in enumerate(lines, 1):
        text = _decode(line, path, number)
        if not text.strip() or text.startswith("#"):
            continue
        if " :: " not in text:
            raise DataError(f"{path}:{number}: a dictionary line needs 'German :: English', got {text[:80]!r}")
        german, english = text.split(" :: ", 1)
        german_alts, english_alts = german.split(" | "), english.split(" | ")
        if len(german_alts) != len(english_alts):
            corpus.counts["lines whose alternatives do not align"] += 1
            continue
        for de, en in zip(german_alts, english_alts):
            sentence = _clean(de.split("; ")[0]), _clean(en.split("; ")[0])
            if sentence[0].endswith(SENTENCE_END) and sentence[1].endswith(SENTENCE_END):
                corpus.pairs.append(sentence)
            else:
                corpus.counts["alternatives that are not sentence pairs"] += 1
                if not entries:
                    continue
                # notes first: "{rode; ridden}" holds the separator of variants
                entry = _clean_entry(de).split("; ")[0], _clean_entry(en).split("; ")[0]
                if all(entry) and not ENTRY_BRACKETS & set(entry[0] + entry[1]):
                    corpus.entries.append(entry)
    corpus.entries = list(dict.fromkeys(corpus.entries))
    return _dedupe(corpus)


def parse_ding(path: Path, entries: bool = True) -> Corpus:
    """Sentence pairs of the Ding dictionary: alternatives (` | `) whose both sides end in . ! or ?,
    the first `; ` variant, annotations `{...}` and `[...]` removed, duplicates dropped. The other
    alternatives (words and phrases) are kept apart as `entries`, bracketed notes removed too;
    `entries=False` leaves them out (cleaning them more than doubles the parse's time)."""
    return _parse_ding_cached(path, path.stat().st_mtime, entries)


def parse_tsv(path: Path) -> Corpus:
    """`source<TAB>target` lines (further columns, like the Tatoeba attribution, are ignored)."""
    lines, md5 = _lines(path)
    corpus = Corpus(path, [], Counter(), md5)
    for number, line in enumerate(lines, 1):
        text = _decode(line, path, number).rstrip("\r")
        if not text.strip():
            corpus.counts["blank lines"] += 1
            continue
        if "\t" not in text:
            raise DataError(f"{path}:{number}: no tab; every line must be 'source<TAB>target', got {text[:80]!r}")
        fields = text.split("\t")
        source, target = fields[0].strip(), fields[1].strip()
        if not source or not target:
            side = "source" if not source else "target"
            raise DataError(f"{path}:{number}: the {side} side is empty: {text[:80]!r}")
        if len(fields) > 2:
            corpus.counts["lines with extra columns (ignored)"] += 1
        corpus.pairs.append((source, target))
    return _dedupe(corpus)


def find_ding(data_dir: str | Path | None) -> Path:
    folder = data_dir_from(data_dir)
    for name in DING_NAMES:
        if (folder / name).is_file():
            return folder / name
    if DING_SYSTEM_PATH.is_file():
        return DING_SYSTEM_PATH
    raise DataError(
        f"the Ding German-English dictionary was not found: looked for {', '.join(str(folder / n) for n in DING_NAMES)} "
        f"and {DING_SYSTEM_PATH}. Install it with `apt-get install trans-de-en` (Debian/Ubuntu), or download "
        "de-en.txt.gz from https://dict.tu-chemnitz.de/ and save it as "
        f"{folder / DING_NAMES[0]}, or point --data-dir / RNNBENCH_DATA at a folder holding translation/."
    )


def split_of(source: str) -> str:
    bucket = int.from_bytes(hashlib.sha1(source.encode("utf-8")).digest()[:8], "big") % SPLIT_BUCKETS
    if bucket < TEST_BUCKETS:
        return "test"
    return "val" if bucket < TEST_BUCKETS + VALIDATION_BUCKETS else "train"


def split_pairs(corpus: Corpus) -> dict[str, list[tuple[str, str]]]:
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "val": [], "test": []}
    for pair in corpus.pairs:
        splits[split_of(pair[0])].append(pair)
    if len(corpus.pairs) < MIN_PAIRS or not all(splits.values()):
        raise DataError(
            f"{corpus.path}: {len(corpus.pairs)} distinct pairs are too few to split into train / validation / "
            f"test (90 / 5 / 5 % by a hash of the source); at least {MIN_PAIRS} are needed, and every split must "
            f"get one (sizes: {', '.join(f'{k} {len(v)}' for k, v in splits.items())})"
        )
    return splits


def _words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def entries_to_add(corpus: Corpus, splits: dict[str, list[tuple[str, str]]], limit: int) -> list[tuple[str, str]]:
    """Up to `limit` of the corpus's dictionary entries to train on beside the training sentences:
    those whose source words all occur in the training sentences' sources (the words the task is
    about, not the dictionary's 300k technical terms), none whose words equal a validation or test
    source's, chosen in the order of a hash of the entry (the same entries whatever the run, cell
    or file order)."""
    known = {word for source, _ in splits["train"] for word in _words(source)}
    held_out = {" ".join(_words(source)) for name in ("val", "test") for source, _ in splits[name]}
    usable = [e for e, words in ((e, _words(e[0])) for e in corpus.entries)
              if known.issuperset(words) and " ".join(words) not in held_out]

    def digest(entry):
        return hashlib.sha1("\t".join(entry).encode("utf-8")).digest()
    return sorted(usable, key=digest)[:limit]
