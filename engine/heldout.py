"""Held-out splits by time span: frames that neither training nor model selection may see.

A video data set such as CamVid films every sequence in one pass, so frames a fraction of a second apart land in
both its train and val folders; a model selected on such a val folder is flattered by frames it nearly trained on.
A held-out split names contiguous time spans per sequence instead: a ``select`` part (model selection), a
``report`` part (the figures nobody chose on), and a guard band around both whose frames training skips.

The split file (JSON)::

    {"guard_frames": 150,
     "select": ["0001TP:007500-007800", "0006R0:2400-2700", "0016E5:05000-05400"],
     "report": ["0001TP:008250-008520", "0006R0:3630-3930", "0016E5:07959-08159"]}

A span is ``SEQUENCE:FIRST-LAST`` in frame numbers, matched against file stems ``SEQUENCE_FRAME`` (the digits of
FRAME, so ``0006R0_f03930`` is frame 3930 of 0006R0). Frames come from every image/label folder pair of the data set
root (train/trainannot and val/valannot for the SegNet layout).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .bundled import MODELS_DIR
from .datasets import paired_files
from .paths import read_json

PARTS = ("select", "report")
SPLIT_SUFFIX = ".split.json"
FOLDER_PAIRS = (("train", "trainannot"), ("val", "valannot"))
_SPAN = re.compile(r"^([^:]+):(\d+)-(\d+)$")
_STEM = re.compile(r"^(.+)_\D*(\d+)$")


def split_file(value: str | Path) -> Path:
    """The split file a ``--split`` names: a path, or a bundled model's name for the split it was chosen on.

    An installed unetrt keeps ``camvid.split.json`` inside the package, where a checkout's path
    ``engine/models/camvid.split.json`` does not reach it; ``--split camvid`` finds it in both.

    Raises:
        FileNotFoundError: when it is neither a file nor a bundled model's name; the message lists the names.

    Example:
        >>> split_file("camvid").name
        'camvid.split.json'
    """
    path = Path(value)
    if path.is_file():
        return path
    names = sorted(p.name.removesuffix(SPLIT_SUFFIX) for p in MODELS_DIR.glob(f"*{SPLIT_SUFFIX}"))
    if str(value) in names:
        return MODELS_DIR / f"{value}{SPLIT_SUFFIX}"
    # A checkout's path (the documents' engine/models/camvid.split.json) given to an installed unetrt.
    stem = path.name.removesuffix(SPLIT_SUFFIX)
    hint = f": the bundled one is --split {stem}" if stem in names else ""
    raise FileNotFoundError(f"split file {str(value)!r} does not exist{hint} (give a split file, or the name of a "
                            f"bundled model for the split it was chosen on: {', '.join(names) or 'none'})")


@dataclass(frozen=True)
class Span:
    """Frames FIRST..LAST (inclusive) of one sequence."""

    sequence: str
    first: int
    last: int

    def holds(self, sequence: str, frame: int, margin: int = 0) -> bool:
        """Whether a frame lies in the span widened by ``margin`` frames on each side."""
        return sequence == self.sequence and self.first - margin <= frame <= self.last + margin


@dataclass(frozen=True)
class HeldOutSplit:
    """Selection and report spans, and the guard band that training keeps away from them."""

    select: tuple[Span, ...]
    report: tuple[Span, ...]
    guard_frames: int

    @classmethod
    def read(cls, path: str | Path) -> HeldOutSplit:
        """Read a split file.

        Raises:
            FileNotFoundError: when the file does not exist.
            ValueError: when it is not UTF-8 JSON (or nests too deep to read), or not a split (the message names
                the bad entry).

        Example:
            >>> HeldOutSplit.read(split_file("camvid")).guard_frames
            90
        """
        path = Path(path)
        data = read_json(path, "split file")
        if not isinstance(data, dict) or not all(isinstance(data.get(part), list) and data[part] for part in PARTS):
            raise ValueError(f"split file {str(path)!r} needs non-empty lists 'select' and 'report'")
        guard = data.get("guard_frames", 0)
        if not isinstance(guard, int) or guard < 0:
            raise ValueError(f"split file {str(path)!r}: guard_frames must be a whole number >= 0, got {guard!r}")
        return cls(select=_parse_spans(data["select"], path), report=_parse_spans(data["report"], path),
                   guard_frames=guard)

    def part(self, name: str) -> tuple[Span, ...]:
        """The spans of ``select`` or ``report``.

        Raises:
            ValueError: for another name.
        """
        if name not in PARTS:
            raise ValueError(f"split part must be one of {', '.join(PARTS)}, got {name!r}")
        return self.select if name == "select" else self.report

    def pairs(self, root: str | Path, part: str) -> list[tuple[Path, Path]]:
        """The (image, label) pairs of one part, from every folder pair of the data set root.

        Raises:
            ValueError: when a span matches no frame (a typo in the split would otherwise shrink it silently).
        """
        spans = self.part(part)
        frames = _all_frames(root)
        chosen = [pair for pair, (sequence, frame) in frames if any(s.holds(sequence, frame) for s in spans)]
        for span in spans:
            if not any(span.holds(sequence, frame) for _, (sequence, frame) in frames):
                raise ValueError(f"{part} span {span.sequence}:{span.first}-{span.last} matches no frame in "
                                 f"{str(root)!r}")
        return chosen

    def train_pairs(self, root: str | Path) -> list[tuple[Path, Path]]:
        """Every pair of the data set root outside both parts and their guard bands."""
        held = self.select + self.report
        return [pair for pair, (sequence, frame) in _all_frames(root)
                if not any(s.holds(sequence, frame, self.guard_frames) for s in held)]


def _parse_spans(entries: Iterable[object], path: Path) -> tuple[Span, ...]:
    spans = []
    for entry in entries:
        match = _SPAN.match(entry) if isinstance(entry, str) else None
        if match is None or int(match[2]) > int(match[3]):
            raise ValueError(f"split file {str(path)!r}: a span looks like 0016E5:07959-08159, got {entry!r}")
        spans.append(Span(match[1], int(match[2]), int(match[3])))
    return tuple(spans)


def _frame_of(stem: str) -> tuple[str, int]:
    match = _STEM.match(stem)
    if match is None:
        raise ValueError(f"file stem {stem!r} is not SEQUENCE_FRAME (e.g. 0016E5_07959): a held-out split needs it")
    return match[1], int(match[2])


def _all_frames(root: str | Path) -> Sequence[tuple[tuple[Path, Path], tuple[str, int]]]:
    root = Path(root)
    found = [pair for images, labels in FOLDER_PAIRS if (root / images).is_dir()
             for pair in paired_files(root / images, root / labels)]
    if not found:
        raise FileNotFoundError(f"{str(root)!r} holds none of the folders {', '.join(i for i, _ in FOLDER_PAIRS)}")
    return [(pair, _frame_of(pair[0].stem)) for pair in found]
