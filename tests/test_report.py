"""The run summary as text (what make run and make demo print); the HTML report is tested on a
real run in test_pipeline_e2e (it needs the published history)."""

from __future__ import annotations

import unicodedata

from tierline import report

SUMMARY = {
    "run_id": "manual__2026-11-02T01:02:03+00:00", "as_of_date": "2026-11-02", "rows_in": 1200,
    "rows_loaded": 1190, "rows_quarantined": 10, "published": {"customer_tier": 801},
    "tier_mix": [{"tier": code, "label_zh": label, "customers": n, "share": n / 801, "monetary": 1234.5}
                 for code, label, n in [("strategic", "战略客户", 6), ("vip", "VIP客户", 27), ("key", "重要客户", 83),
                                        ("regular", "普通客户", 437), ("potential", "潜在客户", 248)]],
    "lifecycle_mix": [], "stage_seconds": {"load_raw": 1.0}, "run_dir": "/tmp/run",
}


def columns(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def test_display_width_counts_cjk_characters_as_two_columns():
    assert report.display_width("VIP客户") == 7
    assert report.display_width("战略客户") == 8
    assert report.pad("VIP客户", 8) == "VIP客户 "


def test_tier_mix_columns_line_up_whatever_the_labels_script():
    rows = [line for line in report.as_text(SUMMARY).splitlines() if line.startswith("    ")]
    assert len(rows) == 5
    # where the customer count ends, in terminal columns: the same on every row
    ends = {columns(line[:line.index(f"{t['customers']:,}") + len(f"{t['customers']:,}")])
            for line, t in zip(rows, SUMMARY["tier_mix"], strict=True)}
    assert len(ends) == 1, rows
