"""Every lesson runs, passes its own checks and writes its figures (in --fast mode).

Each lesson is a standalone program that exits with status 1 when one of its checks fails,
so running it is the test. Lessons run in a subprocess: matplotlib backends, Numba thread
pools and sys.exit stay out of the pytest process.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

LESSONS = Path(__file__).resolve().parents[1] / "lessons"
SCRIPTS = sorted(LESSONS.glob("[0-9][0-9]_*.py"))


def test_lessons_are_found():
    assert len(SCRIPTS) >= 5, f"expected the numbered lessons in {LESSONS}, found {SCRIPTS}"


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_lesson_runs_fast(script, tmp_path):
    out = tmp_path / "figures"
    proc = subprocess.run([sys.executable, str(script), "--fast", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    tail = (proc.stdout[-4000:] + "\n--- stderr ---\n" + proc.stderr[-4000:])
    assert proc.returncode == 0, f"{script.name} exited with {proc.returncode}:\n{tail}"
    figures = sorted(out.glob("*.png"))
    assert figures, f"{script.name} wrote no PNG into {out}:\n{tail}"
    assert all(f.stat().st_size > 1000 for f in figures), f"suspiciously small figures: {figures}"
