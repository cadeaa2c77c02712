"""The sktime / UEA ``.ts`` time-series format, enough of it for multivariate classification sets.

A file is ``#`` comment lines, ``@keyword value`` header lines, then ``@data`` and one sample per
line: each channel's values comma-separated, channels separated by ``:``, the class label last.
``?`` marks a missing value (read as NaN). Time-stamped series (``@timeStamps true``) are not
supported: no skeleton archive uses them. A malformed sample line costs that sample only: it is
returned in :attr:`TsData.rejected` with its line number and reason; a malformed header costs the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asgcn_lightning.errors import DataFormatError


@dataclass(frozen=True)
class TsRejected:
    """A sample line that could not be read: its position among the samples, line number and why."""

    ordinal: int
    line: int
    reason: str
    label: str | None = None


@dataclass
class TsData:
    """A parsed ``.ts`` file; ``series[i]`` is ``(channels, length)`` float32, the ``ordinals[i]``-th sample line."""

    path: Path
    header: dict[str, str]
    class_labels: list[str] | None
    series: list[np.ndarray]
    labels: list[str] | None
    comments: list[str] = field(default_factory=list)
    ordinals: list[int] = field(default_factory=list)
    rejected: list[TsRejected] = field(default_factory=list)

    @property
    def channels(self) -> int | None:
        """Channels per sample: the header's ``@dimensions``, else the first read sample's; None if neither."""
        declared = self.header.get("dimensions", "")
        return int(declared) if declared.isdigit() else (self.series[0].shape[0] if self.series else None)


def read_ts(path: str | Path) -> TsData:
    """Parse a ``.ts`` file: a header that deviates raises :class:`DataFormatError`, a sample line is rejected."""
    path = Path(path)
    try:
        # comments in the archive's files are not always valid UTF-8; they carry no data
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as error:
        raise DataFormatError(path, f"cannot read the file ({error})") from None
    header: dict[str, str] = {}
    comments: list[str] = []
    lines = text.splitlines()
    data_start = None
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            comments.append(line[1:].strip())
        elif line.lower() == "@data":
            data_start = number
            break
        elif line.startswith("@"):
            keyword, _, value = line[1:].partition(" ")
            header[keyword.lower()] = value.strip()
        else:
            raise DataFormatError(path, f"line {number}: text before @data that is neither a comment nor "
                                        f"a @header line: {line[:40]!r}")
    if data_start is None:
        raise DataFormatError(path, "no @data line; not a .ts file")
    if header.get("timestamps", "false").lower() == "true":
        raise DataFormatError(path, "time-stamped series (@timeStamps true) are not supported")
    class_labels = _class_labels(path, header)
    data = TsData(path=path, header=header, class_labels=class_labels, series=[],
                  labels=[] if class_labels is not None else None, comments=comments)
    sample_lines = [(number, raw.strip()) for number, raw in enumerate(lines[data_start:], start=data_start + 1)
                    if raw.strip()]
    if not sample_lines:
        raise DataFormatError(path, "no samples after @data")
    for ordinal, (number, line) in enumerate(sample_lines):
        parts = line.split(":")
        label = parts.pop().strip() if class_labels is not None else None
        try:
            if class_labels is not None and label not in class_labels:
                raise ValueError(f"class {label!r} is not one of @classLabel {class_labels}")
            expected = data.channels or len(parts)
            if len(parts) != expected:
                raise ValueError(f"{len(parts)} channels, expected {expected}")
            series = _channels(parts)
        except ValueError as problem:
            where = f"line {number}, " if str(problem).startswith("channel ") else f"line {number}: "
            known = label if class_labels is not None and label in class_labels else None
            data.rejected.append(TsRejected(ordinal, number, where + str(problem), known))
            continue
        data.series.append(series)
        data.ordinals.append(ordinal)
        if data.labels is not None:
            data.labels.append(label)
    return data


def _class_labels(path: Path, header: dict[str, str]) -> list[str] | None:
    value = header.get("classlabel")
    if value is None:
        return None
    flag, *names = value.split()
    if flag.lower() == "false":
        return None
    if flag.lower() != "true" or not names:
        raise DataFormatError(path, f"@classLabel {value!r}: expected 'true' and the class values")
    return names


def _channels(parts: list[str]) -> np.ndarray:
    """The channels of one sample line; ValueError names what is wrong."""
    channels = []
    for channel, text in enumerate(parts):
        try:
            values = [np.nan if v.strip() == "?" else float(v) for v in text.split(",")]
        except ValueError:
            raise ValueError(f"channel {channel + 1}: non-numeric value in {text[:40]!r}") from None
        channels.append(values)
    lengths = {len(c) for c in channels}
    if len(lengths) != 1:
        raise ValueError(f"channels have different lengths {sorted(lengths)}")
    return np.asarray(channels, dtype=np.float32)
