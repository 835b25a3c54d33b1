"""One vocabulary class: strings <-> ids, and the JSON files run directories keep them in."""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from s2s.errors import S2SError

PAD, UNK = "<pad>", "<unk>"  # ids 0 and 1 of every vocabulary built with specials


class Vocabulary:
    """An ordered list of strings and its inverse; `id` maps unknown strings to UNK (or fails without one)."""

    def __init__(self, items: Iterable[str]):
        self.items = list(items)
        self.ids = {x: i for i, x in enumerate(self.items)}
        self.unk = self.ids.get(UNK)

    @classmethod
    def from_counts(cls, counts: Counter, min_freq: int = 1, max_size: int = 0, specials: tuple[str, ...] = (PAD, UNK),
                    extra: Iterable[str] = ()) -> "Vocabulary":
        """`specials`, then the items seen at least `min_freq` times, most frequent first (ties alphabetical),
        at most `max_size` of them (0 = all), then the `extra` items not yet in."""
        items = sorted((w for w, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w))
        if max_size:
            items = items[:max_size]
        items = list(specials) + items
        known = set(items)
        return cls(items + [w for w in extra if w not in known])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> str:
        return self.items[i]

    def __iter__(self) -> Iterator[str]:
        return iter(self.items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.items == other.items

    def id(self, item: str) -> int:
        found = self.ids.get(item, self.unk)
        if found is None:
            raise KeyError(item)
        return found

    def encode(self, items: Iterable[str]) -> list[int]:
        unk = self.unk
        return [self.ids.get(x, unk) for x in items]


def save_json(path: Path, fields: dict) -> None:
    path.write_text(json.dumps(fields, ensure_ascii=False), encoding="utf-8")


def load_json(path: Path, keys: tuple[str, ...], what: str) -> dict:
    """The fields `keys` of a vocabulary file, or one line naming the file and what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {k: data[k] for k in keys}
    except FileNotFoundError:
        raise S2SError(f"{path}: no such file (the run directory lacks its {what})") from None
    except (ValueError, KeyError, TypeError) as e:
        raise S2SError(f"{path}: not a {what} ({e!r})") from None
