"""Trace readers (Azure LLM 2023/2024, BurstGPT, Mooncake JSONL, seallm CSV) and the writer.

Every reader returns records sorted by arrival and rebased so the first arrives at 0.0.
Columns are looked up by header name, so extra columns and other column orders are fine.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

from .records import TraceRecord, WorkloadError

FORMATS = ("auto", "azure", "burstgpt", "mooncake", "seallm")

# The columns each CSV format needs (its header may hold more).
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BURSTGPT_COLUMNS = ("Timestamp", "Model", "Request tokens", "Response tokens")
SEALLM_COLUMNS = ("arrival_s", "service", "prompt_tokens", "output_tokens")

_MAY_BE_EMPTY = {"service", "Model"}  # no service name is still a request

# A row as read: (arrival as exact int nanoseconds or float seconds, service, prompt, output).
_Row = tuple[int | float, str, int, int]


def read_trace(path: str | Path, fmt: str = "auto") -> list[TraceRecord]:
    """Read a trace file; malformed rows raise WorkloadError("path:line: reason")."""
    if fmt not in FORMATS:
        raise WorkloadError(f"trace format {fmt!r} is not one of {', '.join(FORMATS)}")
    p = Path(path)
    try:
        stat = p.stat()
    except OSError as e:
        raise WorkloadError(f"{path}: cannot read trace: {e.strerror or e}") from None
    # Cached by content identity: generate() and the length sampler re-read the same file.
    return list(_read_cached(str(p), fmt, stat.st_mtime_ns, stat.st_size))


@lru_cache(maxsize=8)
def _read_cached(path: str, fmt: str, _mtime_ns: int, _size: int) -> tuple[TraceRecord, ...]:
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "mooncake":
        rows = list(_mooncake_rows(path))
    else:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            parse = {"azure": _azure_rows, "burstgpt": _burstgpt_rows, "seallm": _seallm_rows}
            rows = list(parse[fmt](path, header, reader))
    if not rows:
        return ()
    # Stable sort keeps file order for equal timestamps; subtract the first arrival while the
    # values are still exact integers (Azure ns since the epoch would lose digits as floats).
    rows.sort(key=lambda r: r[0])
    t0 = rows[0][0]
    div = 1e9 if isinstance(t0, int) else 1.0  # int / float rounds once: exact to the ns
    return tuple(TraceRecord((t - t0) / div, s, pr, out) for t, s, pr, out in rows)


def detect_format(path: str | Path) -> str:
    """Pick the format from the .jsonl suffix or the CSV header."""
    if str(path).endswith((".jsonl", ".jsonl.txt")):
        return "mooncake"
    with open(path, newline="", encoding="utf-8") as f:
        first = f.readline().lstrip("\ufeff")
    if first.lstrip().startswith("{"):
        return "mooncake"
    header = {h.strip() for h in next(csv.reader([first]), [])}
    for fmt, cols in (
        ("azure", AZURE_COLUMNS),
        ("burstgpt", BURSTGPT_COLUMNS),
        ("seallm", SEALLM_COLUMNS),
    ):
        if header.issuperset(cols):
            return fmt
    raise WorkloadError(
        f"{path}:1: unknown trace header {first.strip()!r}; expected one of: "
        f"{','.join(AZURE_COLUMNS)} (azure) | {','.join(BURSTGPT_COLUMNS)},... (burstgpt) | "
        f"{','.join(SEALLM_COLUMNS)} (seallm) | JSON lines with timestamp,input_length,"
        f"output_length (mooncake)"
    )


def write_trace(path: str | Path, records: Sequence[TraceRecord]) -> None:
    """Write records in seallm CSV; repr() of a float round-trips it exactly."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(SEALLM_COLUMNS)
        for r in records:
            w.writerow((repr(float(r.arrival_s)), r.service, r.prompt_tokens, r.output_tokens))


# --- per-format row parsers -------------------------------------------------------------


def _columns(path: str, header: list[str], needed: Sequence[str]) -> list[int]:
    missing = [c for c in needed if c not in header]
    if missing:
        raise WorkloadError(f"{path}:1: missing column(s) {', '.join(missing)} in header")
    return [header.index(c) for c in needed]


def _fields(
    path: str, header: list[str], reader: Iterator[list[str]], needed: Sequence[str]
) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, the needed fields) for each non-blank row."""
    idx = _columns(path, header, needed)
    top = max(idx)
    for row in reader:
        line = reader.line_num  # type: ignore[attr-defined]
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line (e.g. a trailing newline)
        if len(row) <= top:
            raise WorkloadError(
                f"{path}:{line}: missing field(s): expected {len(header)} columns, got {len(row)}"
            )
        vals = [row[i].strip() for i in idx]
        for name, v in zip(needed, vals, strict=True):
            if not v and name not in _MAY_BE_EMPTY:
                raise WorkloadError(f"{path}:{line}: missing field {name}")
        yield line, vals


def _tokens(path: str, line: int, name: str, text: str, least: int) -> int:
    try:
        n = int(text)
    except ValueError:
        # Some exports write counts as "12.0"; accept integral floats only.
        try:
            x = float(text)
        except ValueError:
            x = math.nan
        if not x.is_integer():
            raise WorkloadError(f"{path}:{line}: {name} is not an integer: {text!r}") from None
        n = int(x)
    if n < 0:
        raise WorkloadError(f"{path}:{line}: {name} is negative: {n}")
    if n < least:
        raise WorkloadError(f"{path}:{line}: {name} must be >= {least}, got {n}")
    return n


def _seconds(path: str, line: int, name: str, text: str, unit: float = 1.0) -> float:
    try:
        x = float(text) * unit
    except (TypeError, ValueError):
        raise WorkloadError(f"{path}:{line}: {name} is not a number: {text!r}") from None
    if not math.isfinite(x):
        raise WorkloadError(f"{path}:{line}: {name} is not finite: {text!r}")
    return x


def _azure_rows(path: str, header: list[str], reader: Iterator[list[str]]) -> Iterator[_Row]:
    parse_ts = _timestamp_parser()
    for line, (ts, ctx, gen) in _fields(path, header, reader, AZURE_COLUMNS):
        ns = parse_ts(ts)
        if ns is None:
            raise WorkloadError(f"{path}:{line}: bad TIMESTAMP {ts!r}")
        yield (
            ns,
            "",
            _tokens(path, line, "ContextTokens", ctx, 0),
            _tokens(path, line, "GeneratedTokens", gen, 1),
        )


def _burstgpt_rows(path: str, header: list[str], reader: Iterator[list[str]]) -> Iterator[_Row]:
    for line, (ts, model, req, resp) in _fields(path, header, reader, BURSTGPT_COLUMNS):
        t = _seconds(path, line, "Timestamp", ts)
        prompt = _tokens(path, line, "Request tokens", req, 0)
        output = _tokens(path, line, "Response tokens", resp, 0)
        if output == 0:
            continue  # BurstGPT logs failed requests with 0 response tokens: not served work
        yield t, model, prompt, output


def _seallm_rows(path: str, header: list[str], reader: Iterator[list[str]]) -> Iterator[_Row]:
    for line, (t, service, prompt, output) in _fields(path, header, reader, SEALLM_COLUMNS):
        yield (
            _seconds(path, line, "arrival_s", t),
            service,
            _tokens(path, line, "prompt_tokens", prompt, 0),
            _tokens(path, line, "output_tokens", output, 1),
        )


def _mooncake_rows(path: str) -> Iterator[_Row]:
    with open(path, encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise WorkloadError(f"{path}:{line}: invalid JSON: {e.msg}") from None
            if not isinstance(obj, dict):
                raise WorkloadError(f"{path}:{line}: expected a JSON object")
            for key in ("timestamp", "input_length", "output_length"):
                if key not in obj or obj[key] is None:
                    raise WorkloadError(f"{path}:{line}: missing field {key}")
            yield (
                _seconds(path, line, "timestamp", obj["timestamp"], unit=1e-3),  # ms -> s
                str(obj.get("model", "")),
                _tokens(path, line, "input_length", str(obj["input_length"]), 0),
                _tokens(path, line, "output_length", str(obj["output_length"]), 1),
            )


# --- Azure timestamps ---------------------------------------------------------------------

# "2023-11-16 18:15:50.3145790", or 2024 variants: other fractional widths, a "T", a "Z" or
# "+hh:mm" suffix. datetime.fromisoformat rejects 7 fractional digits, so the fraction is
# parsed separately as an exact integer number of nanoseconds.
_TS = re.compile(
    r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:[.,](\d+))?\s*(Z|[+-]\d{2}:?\d{2})?"
)
_UTC = UTC


def _timestamp_parser() -> Callable[[str], int | None]:
    seconds_of: dict[tuple[str, str, str | None], int] = {}  # rows share seconds: cache them

    def parse(text: str) -> int | None:
        m = _TS.fullmatch(text)
        if m is None:
            return None
        date, clock, frac, tz = m.groups()
        key = (date, clock, tz)
        sec = seconds_of.get(key)
        if sec is None:
            try:
                dt = datetime.fromisoformat(f"{date} {clock}")
            except ValueError:
                return None
            offset = 0
            if tz and tz != "Z":
                sign = -1 if tz[0] == "-" else 1
                hh, mm = int(tz[1:3]), int(tz[-2:])
                offset = sign * (hh * 3600 + mm * 60)
            # Naive timestamps are taken as UTC; only differences matter.
            epoch = dt.replace(tzinfo=_UTC) - datetime(1970, 1, 1, tzinfo=_UTC)
            sec = epoch // timedelta(seconds=1) - offset
            seconds_of[key] = sec
        frac_ns = int((frac or "0")[:9].ljust(9, "0"))  # beyond ns is noise: truncate
        return sec * 1_000_000_000 + frac_ns

    return parse
