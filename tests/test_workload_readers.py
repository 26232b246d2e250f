"""Trace readers: exact parsing of each format, errors that point at the bad line, detection."""

from __future__ import annotations

import itertools
import shutil
import time
from pathlib import Path

import pytest

from seallm.workload import TraceRecord, WorkloadError, detect_format, read_trace, write_trace

FIX = Path(__file__).parent / "fixtures" / "workload"
REAL_TRACE = Path(__file__).resolve().parents[1].parent / "shared/traces/azure_llm_2023_conv.csv"


def test_azure_2023_keeps_seven_fractional_digits():
    recs = read_trace(FIX / "azure.csv", "azure")
    assert recs == [
        TraceRecord(0.0, "", 374, 44),
        TraceRecord(4.314579, "", 396, 109),
        TraceRecord(4.541877, "", 879, 55),
        TraceRecord(14.0000001, "", 91, 16),  # the 7th digit survives
    ]


def test_azure_2024_widths_and_timezones():
    recs = read_trace(FIX / "azure2024.csv", "azure")
    # +02:00 02:00:02.5 is 00:00:02.5 UTC; naive and "Z" stamps are UTC.
    assert [r.arrival_s for r in recs] == [0.0, 0.990074, 2.490074, 2.990074]
    assert [r.prompt_tokens for r in recs] == [100, 200, 300, 400]


def test_burstgpt_uses_model_column_and_skips_failures():
    recs = read_trace(FIX / "burstgpt.csv", "burstgpt")
    assert recs == [  # the row with 0 response tokens (a failed request) is skipped
        TraceRecord(0.0, "ChatGPT", 472, 18),
        TraceRecord(41.0, "GPT-4", 417, 276),
        TraceRecord(113.0, "ChatGPT", 1360, 437),
    ]


def test_mooncake_milliseconds_and_sorting():
    recs = read_trace(FIX / "mooncake.jsonl", "mooncake")
    assert recs == [
        TraceRecord(0.0, "", 6955, 52),
        TraceRecord(1.5, "", 6472, 26),
        TraceRecord(27.482, "", 10, 1),
    ]


def test_seallm_csv_sorted_and_rebased():
    recs = read_trace(FIX / "seallm.csv", "seallm")
    assert recs == [
        TraceRecord(0.0, "mistral-7b", 50, 5),
        TraceRecord(1.0, "llama-7b", 100, 20),
        TraceRecord(2.5, "svc,with,comma", 7, 3),
    ]


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("azure.csv", "azure"),
        ("azure2024.csv", "azure"),
        ("burstgpt.csv", "burstgpt"),
        ("mooncake.jsonl", "mooncake"),
        ("seallm.csv", "seallm"),
    ],
)
def test_auto_detection(name, fmt):
    assert detect_format(FIX / name) == fmt
    assert read_trace(FIX / name) == read_trace(FIX / name, fmt)


def test_auto_detects_json_lines_without_suffix(tmp_path):
    p = tmp_path / "trace.log"
    shutil.copy(FIX / "mooncake.jsonl", p)
    assert detect_format(p) == "mooncake"
    assert len(read_trace(p)) == 3


@pytest.mark.parametrize(
    ("name", "line", "reason"),
    [
        ("azure_bad_timestamp.csv", 3, "bad TIMESTAMP"),
        ("azure_missing_field.csv", 3, "missing field"),
        ("azure_negative.csv", 2, "ContextTokens is negative"),
        ("azure_zero_output.csv", 4, "GeneratedTokens must be >= 1"),
        ("burstgpt_non_numeric.csv", 3, "Request tokens is not an integer"),
        ("mooncake_missing_field.jsonl", 2, "missing field output_length"),
        ("mooncake_bad_json.jsonl", 3, "invalid JSON"),
        ("seallm_negative.csv", 3, "prompt_tokens is negative"),
        ("seallm_bad_arrival.csv", 2, "arrival_s is not a number"),
        ("unknown_header.csv", 1, "unknown trace header"),
    ],
)
def test_malformed_rows_name_file_and_line(name, line, reason):
    with pytest.raises(WorkloadError) as err:
        read_trace(FIX / name)
    msg = str(err.value)
    assert f"{name}:{line}: " in msg
    assert reason in msg


def test_explicit_format_with_wrong_header_names_missing_columns():
    with pytest.raises(WorkloadError, match=r"seallm\.csv:1: missing column"):
        read_trace(FIX / "seallm.csv", "azure")


def test_unknown_format_and_missing_file():
    with pytest.raises(WorkloadError, match="not one of"):
        read_trace(FIX / "seallm.csv", "parquet")
    with pytest.raises(WorkloadError, match="cannot read trace"):
        read_trace(FIX / "no_such_file.csv")


def test_write_read_round_trip(tmp_path):
    recs = [
        TraceRecord(0.0, "a", 10, 1),
        TraceRecord(0.1 + 0.2, "b,c", 20, 2),  # awkward float and a comma in the name
        TraceRecord(3600.000000123, "", 30, 3),
    ]
    p = tmp_path / "out.csv"
    write_trace(p, recs)
    assert detect_format(p) == "seallm"
    assert read_trace(p) == recs


def test_empty_trace(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("arrival_s,service,prompt_tokens,output_tokens\n")
    assert read_trace(p) == []


@pytest.mark.skipif(not REAL_TRACE.exists(), reason="../shared traces not present")
def test_real_azure_trace_reads_fast():
    from seallm.workload.readers import _read_cached

    _read_cached.cache_clear()  # time a cold read, not the cache
    t0 = time.perf_counter()
    recs = read_trace(REAL_TRACE)
    elapsed = time.perf_counter() - t0
    assert len(recs) == 19_366
    assert recs[0].arrival_s == 0.0
    assert all(a.arrival_s <= b.arrival_s for a, b in itertools.pairwise(recs))
    assert recs[1] == TraceRecord(4.314579, "", 396, 109)
    assert 3500 < recs[-1].arrival_s < 3600
    assert elapsed < 1.0
