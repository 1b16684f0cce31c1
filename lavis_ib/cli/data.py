"""`lavis-ib data check PROJECT.yaml`: for each dataset of a project, which of the files and
folders its build needs are on disk, which are missing, and how many samples each split
holds, so a new user learns what to download before a run fails on it (docs/datasets.md).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

from lavis_ib.common.errors import LavisIbError

#: the log-line words of each kind of report row, aligned in the output
PRESENT, MISSING, PROBLEM, SAMPLES = "present", "missing", "problem", "samples"
MEDIA, UNREADABLE = "media", "unreadable"
_MAX_LISTED = 20    # unreadable files listed per split


@dataclass
class DatasetReport:
    """What `data check` found for one dataset entry of a project."""

    name: str
    present: list[tuple[str, str]] = field(default_factory=list)   # (what, path)
    missing: list[str] = field(default_factory=list)               # one line per missing path
    problems: list[str] = field(default_factory=list)              # config or build errors
    counts: dict[str, str] = field(default_factory=dict)           # split -> samples found
    media: dict[str, Any] = field(default_factory=dict)            # split -> MediaCheck | None
    notes: list[str] = field(default_factory=list)

    @property
    def unreadable(self) -> int:
        """Media files found missing or (with --decode) not decodable, over all splits."""
        return sum(len(m.unreadable) for m in self.media.values() if m is not None)

    @property
    def complete(self) -> bool:
        return not self.missing and not self.problems and not self.unreadable


def _recording_builder(builder: Any, seen: list[tuple[str, str, bool]]) -> None:
    """Make `builder.require` record each path it checks (what, path, exists) and then do
    what it always does; check_files() thereby reports the present paths too."""
    original = builder.require

    def require(path: str, what: str, hint: str = "") -> str:
        seen.append((what, path, os.path.exists(path)))
        return original(path, what, hint)

    builder.require = require


def _count(dataset: Any) -> str:
    """The samples of a built split (a streamed split reports its configured size)."""
    from torch.utils.data import IterableDataset

    if isinstance(dataset, IterableDataset):
        try:
            return f"{len(dataset)} (streamed; num_samples from the config, not counted)"
        except TypeError:
            return "streamed (no num_samples set)"
    return str(len(dataset))


def _build_and_scan(report: DatasetReport, builder: Any, decode: bool) -> None:
    """Build the splits (annotations read), count their samples and check each split's
    media files: that each exists or, with `decode`, that it decodes with the readers
    training and evaluation use (`lavis_ib.datasets.media_check`), so a split with
    unreadable images is not called complete."""
    from lavis_ib.datasets.media_check import can_check, check_media

    for split, dataset in builder.build_datasets().items():
        report.counts[split] = _count(dataset)
        desc = f"decoding {report.name}/{split}" if decode else None
        report.media[split] = check_media(dataset, decode, desc) if can_check(dataset) else None


def dataset_report(name: str, entry: Any, decode: bool = False) -> DatasetReport:
    """Check the files of dataset entry `name` (a composed `datasets.<name>` node) and,
    when they are all present, build it to count its samples and check that every media
    file exists (`decode`: that it decodes).

    The file walk is the pre-flight one (`BaseDatasetBuilder.check_files`): every
    `require` it makes is recorded, so "present" and "missing" list exactly the paths a
    build would open, in the words of the error a run would raise. A dataset with missing
    files is not built, and nothing is ever downloaded: the check runs with `download:
    false` and notes that `download: true` would fetch the missing files with a url."""
    from omegaconf import OmegaConf

    from lavis_ib.common.config import builder_name
    from lavis_ib.common.registry import registry

    report = DatasetReport(name)
    try:
        builder_cls = registry.get_builder_class(builder_name(name, entry))
    except LavisIbError as exc:
        report.problems.append(str(exc))
        return report
    config = OmegaConf.create(OmegaConf.to_container(entry, resolve=True))
    if config.get("download", False):
        report.notes.append("download: true: missing files with a url are fetched when a run "
                            "builds the dataset (this check downloads nothing)")
        config.download = False
    seen: list[tuple[str, str, bool]] = []
    builder = builder_cls(config)
    _recording_builder(builder, seen)
    lines = builder.check_files()
    report.present = list(dict.fromkeys((what, path) for what, path, ok in seen if ok))
    missing_paths = [path for _, path, ok in seen if not ok]
    for line in lines:
        (report.missing if any(p in line for p in missing_paths) else report.problems).append(line)
    if report.complete:
        try:
            _build_and_scan(report, builder_cls(config), decode)
        except LavisIbError as exc:
            report.problems.append(f"building failed: {exc}")
    return report


def project_reports(cfg_path: str, options: Sequence[str] | None = None, decode: bool = False
                    ) -> tuple[list[str], list[DatasetReport]]:
    """(project-level problems, one report per dataset entry) of project `cfg_path`."""
    from lavis_ib.common.config import Config

    cfg = Config(cfg_path, options, strict=False)
    datasets = cfg.config.get("datasets") or {}
    return list(cfg.problems), [dataset_report(str(n), e, decode) for n, e in datasets.items()]


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _media_lines(media: dict[str, Any]) -> list[str]:
    """The `media` summary line of a dataset and one line per missing or unreadable file
    (`missing` when only existence was checked, `unreadable` after decoding)."""
    parts, lines = [], []
    for split, check in media.items():
        if check is None:
            parts.append(f"{split}: not checked (streamed)")
            continue
        word = UNREADABLE if check.decoded else MISSING
        if not check.unreadable:
            parts.append(f"{split}: {_files(check.files)}, all "
                         + ("readable" if check.decoded else "present"))
            continue
        parts.append(f"{split}: {len(check.unreadable)} of {_files(check.files)} {word} "
                     f"({check.bad_samples} samples)")
        for i, (path, (reason, uses)) in enumerate(sorted(check.unreadable.items())):
            if i == _MAX_LISTED:
                lines.append(f"  {word:<8} {split}: ... and {len(check.unreadable) - i} more")
                break
            lines.append(f"  {word:<8} {split}: {path}: {reason} ({uses} samples)")
    checked = [m for m in media.values() if m is not None]
    if not checked:
        return []
    tail = "" if checked[0].decoded else " (existence checked; --decode reads every file)"
    return [f"  {MEDIA:<8} " + "; ".join(parts) + tail, *lines]


def _state(r: DatasetReport) -> str:
    if r.complete:
        return "complete"
    decoded = any(m is not None and m.decoded for m in r.media.values())
    parts = [f"{len(r.missing)} missing"] if r.missing else []
    parts += [f"{len(r.problems)} problem(s)"] if r.problems else []
    if r.unreadable:
        parts.append(f"{r.unreadable} {'unreadable' if decoded else 'missing'} media file(s)")
    return ", ".join(parts)


def format_reports(problems: Sequence[str], reports: Sequence[DatasetReport]) -> str:
    """The text `lavis-ib data check` prints: one block per dataset, then a summary."""
    out = [f"{PROBLEM:<8} {p}" for p in problems]
    for r in reports:
        out.append(f"{r.name}: {_state(r)}")
        out += [f"  {PRESENT:<8} {what}: {path}" for what, path in r.present]
        out += [f"  {MISSING:<8} {line}" for line in r.missing]
        out += [f"  {PROBLEM:<8} {line}" for line in r.problems]
        if r.counts:
            out.append(f"  {SAMPLES:<8} " + ", ".join(f"{s}: {n}" for s, n in r.counts.items()))
            out += _media_lines(r.media)
        elif not r.complete:
            out.append(f"  {SAMPLES:<8} not counted (the dataset is not built while files are missing)")
        out += [f"  note     {n}" for n in r.notes]
    complete = sum(r.complete for r in reports)
    out.append(f"summary: {len(reports)} dataset(s), {complete} complete, "
               f"{len(reports) - complete} with missing or unreadable files or problems"
               + (f"; {len(problems)} project problem(s)" if problems else ""))
    return "\n".join(out)


def check_main(argv: Sequence[str] | None = None) -> int:
    """Report, per dataset of a project, the files present and missing, the samples found
    and the media files missing (--decode: unreadable). Exit 0 when every dataset is
    complete (every media file present, or readable with --decode) and builds, 2 otherwise
    (as `lavis-ib check`)."""
    import argparse

    parser = argparse.ArgumentParser(prog="lavis-ib data check", description=check_main.__doc__.split("\n")[0])
    parser.add_argument("config", help="project YAML file")
    parser.add_argument("--options", nargs="+", default=[], help="overrides: key=value")
    parser.add_argument("--decode", action="store_true",
                        help="decode every image and video (slow) instead of checking that "
                             "each exists")
    args = parser.parse_args(argv)
    problems, reports = project_reports(args.config, args.options, args.decode)
    print(format_reports(problems, reports))
    return 0 if not problems and all(r.complete for r in reports) else 2


def main(argv: Sequence[str] | None = None) -> int:
    """`lavis-ib data check PROJECT`: the data check of lavis_ib/cli/data.py (exit 0 when
    every dataset's files are present, 2 otherwise)."""
    args = list(argv or [])
    if not args or args[0] != "check":
        asked = args[:1] in (["-h"], ["--help"])
        print("usage: lavis-ib data check PROJECT.yaml [--decode] [--options key=value ...]",
              file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    return check_main(args[1:])
