"""Helpers shared by the lessons: command line, a check recorder, figures, printing.

Every lesson is a standalone program with the same command line:

    python lessons/NN_name.py [--fast] [--out DIR] [--seed S]

``--fast`` shrinks sizes and training time (the test suite runs every lesson this way),
``--out`` is where figures go (default ``lessons/out/``), ``--seed`` seeds every
``numpy.random.Generator`` the lesson draws from.

A lesson records each of its checks in a ``Checker``. A check that fails is printed at once
with its details; ``Checker.finish()`` prints a summary and exits with status 1 if anything
failed, so a broken library (or a broken lesson) can never pass silently.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

LESSONS_DIR = Path(__file__).resolve().parent
REPO_ROOT = LESSONS_DIR.parent

# Let `python lessons/NN_x.py` find the package without installing it.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402,F401  (re-exported for the lessons)
import numpy as np  # noqa: E402


def parse_args(description: str, argv=None, extra=None):
    """The common command line. ``extra(parser)`` may add lesson-specific options."""
    parser = argparse.ArgumentParser(description=description.strip().splitlines()[0])
    parser.add_argument("--fast", action="store_true",
                        help="small sizes and short runs (what the tests use)")
    parser.add_argument("--out", type=Path, default=LESSONS_DIR / "out",
                        help="folder for the figures (default: lessons/out/)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random generator")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def banner(title: str):
    line = "=" * max(len(title), 60)
    print(f"\n{line}\n{title}\n{line}")


def section(title: str):
    print(f"\n--- {title} " + "-" * max(0, 56 - len(title)))


class Checker:
    """Records named pass/fail checks; ``finish()`` exits non-zero if any failed."""

    def __init__(self, lesson: str):
        self.lesson = lesson
        self.results: list[tuple[str, bool]] = []
        self.started = time.perf_counter()

    def check(self, name: str, passed: bool, detail: str = "") -> bool:
        passed = bool(passed)
        self.results.append((name, passed))
        flag = "PASS" if passed else "FAIL"
        print(f"  [{flag}] {name}" + (f"  ({detail})" if detail else ""))
        return passed

    def close(self, name, actual, expected, atol=1e-8, rtol=1e-6) -> bool:
        """Pass when every |actual - expected| <= atol + rtol |expected| (shapes must match)."""
        actual, expected = np.asarray(actual), np.asarray(expected)
        if actual.shape != expected.shape:
            return self.check(name, False, f"shape {actual.shape} != expected {expected.shape}")
        err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        ok = bool(np.all(err <= atol + rtol * np.abs(expected)))
        return self.check(name, ok, f"max abs err {err.max(initial=0.0):.2e}")

    def equal(self, name, actual, expected) -> bool:
        actual, expected = np.asarray(actual), np.asarray(expected)
        ok = actual.shape == expected.shape and bool(np.array_equal(actual, expected))
        detail = "" if ok else f"got {actual.ravel()[:8]}..., expected {expected.ravel()[:8]}..."
        return self.check(name, ok, detail)

    def grad_results(self, label: str, results) -> bool:
        """Record a list of ``snnvae.gradcheck.GradCheckResult`` as one check each."""
        ok = True
        for r in results:
            ok &= self.check(f"{label}: d/d{r.name}", r.passed,
                             f"{r.checked} entries, max abs err {r.max_abs_error:.1e}, "
                             f"max rel err {r.max_rel_error:.1e}")
        return ok

    @property
    def failed(self):
        return [name for name, ok in self.results if not ok]

    def finish(self):
        elapsed = time.perf_counter() - self.started
        total, bad = len(self.results), self.failed
        print(f"\n{self.lesson}: {total - len(bad)}/{total} checks passed in {elapsed:.1f} s")
        if bad:
            print("FAILED checks:\n  - " + "\n  - ".join(bad), file=sys.stderr)
            print(f"{self.lesson}: at least one check failed; see the lines marked FAIL above.",
                  file=sys.stderr)
            sys.exit(1)
        if total == 0:
            print(f"{self.lesson}: no check ran; a lesson without checks proves nothing.",
                  file=sys.stderr)
            sys.exit(1)


def save_figure(fig, out: Path, name: str) -> Path:
    """Save ``fig`` as ``out/name`` (PNG), close it and print where it went."""
    path = Path(out) / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"  figure written: {os.path.relpath(path)}")
    return path


def table(rows, header):
    """Print rows (lists of printable values) as an aligned text table."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    print("  " + fmt.format(*header))
    print("  " + "  ".join("-" * w for w in widths))
    for r in rows:
        print("  " + fmt.format(*r))
