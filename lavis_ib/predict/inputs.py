"""The inputs of `lavis-ib predict` as a list of records, checked before any model loads.

Command-line paths, folders, globs (`expand_paths`) and JSONL records (`jsonl_records`)
become one record list, so a typo costs seconds rather than a model load."""
from __future__ import annotations

import glob
import json
import logging
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

from lavis_ib.common.errors import ConfigError, DataError, did_you_mean

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
RECORD_KEYS = ("image", "video", "prompt", "candidates")
_MAX_LISTED = 10


@dataclass(frozen=True)
class PredictRecord:
    """One input: the file at `path`, `kind` "image" or "video", its prompt and its
    candidate list (None: generate an answer). `label` is the path as a JSONL record wrote
    it (the output's `input`, so results join back to the records); None: `path`."""

    path: str
    kind: str
    prompt: str
    candidates: tuple[str, ...] | None = None
    label: str | None = None

    @property
    def name(self) -> str:
        return self.label if self.label is not None else self.path


def kind_of(path: str) -> str | None:
    ext = os.path.splitext(path)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    return "video" if ext in VIDEO_EXTENSIONS else None


def _folder_files(folder: str, recursive: bool) -> tuple[list[str], int]:
    """(media files of `folder` sorted by path, number of other files passed over)."""
    found, ignored = [], 0
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            if kind_of(path) is None:
                ignored += 1
            else:
                found.append(path)
        if not recursive:
            break
    return found, ignored


def expand_paths(paths: Iterable[str], recursive: bool = False) -> list[str]:
    """Files, folders and glob patterns -> the media files they name, in the given order
    (a folder's and a pattern's matches sorted). Non-media files found in folders are
    passed over with one log line and a count; a file named directly is always kept.

    A folder gives its image and video files by extension (`recursive` descends into
    sub-folders); patterns are expanded here so that quoting them works the same in every
    shell. A missing path or a glob that matches nothing is one error naming it.
    """
    out, missing, ignored = [], [], 0
    for arg in paths:
        if glob.has_magic(arg) and not os.path.exists(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                missing.append(f"'{arg}' (a pattern that matches no file)")
            for match in matches:
                if os.path.isdir(match):
                    files, skipped = _folder_files(match, recursive)
                    out += files
                    ignored += skipped
                elif kind_of(match) is not None:
                    out.append(match)
                else:
                    ignored += 1
        elif os.path.isdir(arg):
            files, skipped = _folder_files(arg, recursive)
            if not files:
                missing.append(f"'{arg}' (a folder with no image or video file"
                               f"{'' if recursive else '; add --recursive for its sub-folders'})")
            out += files
            ignored += skipped
        elif os.path.isfile(arg):
            out.append(arg)
        else:
            missing.append(f"'{arg}' (does not exist)")
    if missing:
        raise DataError(f"no input at {_listed(missing)}.")
    if ignored:
        log.info("passed over %d file(s) without an image or video extension (%s / %s)",
                 ignored, ", ".join(sorted(IMAGE_EXTENSIONS)), ", ".join(sorted(VIDEO_EXTENSIONS)))
    return out


def _listed(items: Sequence[str]) -> str:
    more = len(items) - _MAX_LISTED
    return ", ".join(items[:_MAX_LISTED]) + (f" and {more} more" if more > 0 else "")


def path_records(paths: Sequence[str], forced_kind: str | None, prompt: str | None,
                 candidates: Sequence[str] | None, recursive: bool = False) -> list[PredictRecord]:
    """Records of command-line paths; `forced_kind` ("image"/"video", from `--image` or
    `--video`) overrides the extension, otherwise an unknown extension is read as an image."""
    if prompt is None:
        raise ConfigError("--prompt is needed for inputs given as paths (only --input "
                          "records may carry their own prompt).")
    cands = tuple(candidates) if candidates else None
    return [PredictRecord(path, forced_kind or kind_of(path) or "image", prompt, cands)
            for path in expand_paths(paths, recursive)]


def jsonl_records(path: str, prompt: str | None,
                  candidates: Sequence[str] | None) -> list[PredictRecord]:
    """Records of a JSONL file; `prompt` / `candidates` fill records without their own.
    Every problem of the file is reported at once, each with its line number.

    One `{"image" | "video": path, "prompt": str?, "candidates": [str, ...]?}` object per
    line; relative paths are resolved against the JSONL's folder.
    """
    if not os.path.isfile(path):
        raise DataError(f"--input '{path}' does not exist.")
    base = os.path.dirname(os.path.abspath(path))
    records, problems = [], []
    for number, line in _text_lines(path):
        if isinstance(line, UnicodeDecodeError):
            problems.append(f"line {number}: {_not_utf8(line)}")
            continue
        if not line.strip():
            continue
        try:
            records.append(_record(json.loads(line), base, prompt, candidates))
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: not JSON ({exc.msg} at column {exc.colno})")
        except (ConfigError, DataError) as exc:
            problems.append(f"line {number}: {exc}")
    if problems:
        raise DataError(f"--input '{path}': {_listed(problems)}.")
    if not records:
        raise DataError(f"--input '{path}' holds no record.")
    return records


def _text_lines(path: str) -> Iterator[tuple[int, str | UnicodeDecodeError]]:
    """(line number, text) of each line of a UTF-8 file (a leading BOM dropped); a line
    that is not UTF-8 comes as its decoding error instead of ending the reading."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield number, exc


def _not_utf8(exc: UnicodeDecodeError) -> str:
    """Where a line stops being UTF-8: the byte's value and its position in the line."""
    byte = exc.object[exc.start]
    return (f"not UTF-8 text (byte 0x{byte:02x} at byte {exc.start + 1} of the line); save the "
            f"file as UTF-8")


def _record(obj, base: str, prompt: str | None, candidates: Sequence[str] | None) -> PredictRecord:
    if not isinstance(obj, dict):
        raise ConfigError(f"a record must be a JSON object, got {type(obj).__name__}")
    for key in obj:
        if key not in RECORD_KEYS:
            raise ConfigError(f"unknown key '{key}'.{did_you_mean(key, RECORD_KEYS)} Keys: "
                              f"{', '.join(RECORD_KEYS)}")
    kinds = [k for k in ("image", "video") if k in obj]
    if len(kinds) != 1:
        raise ConfigError("give exactly one of 'image' and 'video'")
    kind, given = kinds[0], obj[kinds[0]]
    if not isinstance(given, str) or not given:
        raise ConfigError(f"'{kind}' must be a path string")
    full = os.path.normpath(os.path.join(base, given))
    if not os.path.isfile(full):
        raise DataError(f"{kind} '{given}' does not exist (read as '{full}')")
    text = obj.get("prompt", prompt)
    if not isinstance(text, str) or not text:
        raise ConfigError("no prompt: give 'prompt' in the record or --prompt")
    if "candidates" in obj:
        cands = checked_candidates(obj["candidates"])
    else:
        cands = tuple(candidates) if candidates else None
    return PredictRecord(full, kind, text, cands, label=given)


def checked_candidates(cands) -> tuple[str, ...]:
    """A non-empty list of distinct non-empty strings (the output maps label -> score)."""
    if isinstance(cands, str) or not isinstance(cands, (list, tuple)) or not cands:
        raise ConfigError("'candidates' must be a non-empty list of strings")
    if not all(isinstance(c, str) and c.strip() for c in cands):
        raise ConfigError("every candidate must be a non-empty string")
    seen = [c for i, c in enumerate(cands) if c in cands[:i]]
    if seen:
        raise ConfigError(f"candidates appear twice: {', '.join(repr(c) for c in seen)}")
    return tuple(cands)


def parse_candidates(value: str | None) -> tuple[str, ...] | None:
    """`--candidates`: comma-separated, or `@FILE` with one candidate per line."""
    if value is None:
        return None
    if value.startswith("@"):
        if not os.path.isfile(value[1:]):
            raise DataError(f"--candidates '{value}': file '{value[1:]}' does not exist.")
        items = []
        for number, line in _text_lines(value[1:]):
            if isinstance(line, UnicodeDecodeError):
                raise DataError(f"--candidates '{value}': line {number}: {_not_utf8(line)}.")
            items += [line.strip()] if line.strip() else []
    else:
        items = [c.strip() for c in value.split(",") if c.strip()]
    if not items:
        raise ConfigError(f"--candidates '{value}': give at least one answer.")
    try:
        return checked_candidates(items)
    except ConfigError as exc:
        raise ConfigError(f"--candidates: {exc}.") from None
