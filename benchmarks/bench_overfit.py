"""How long the tiny CrossNet takes to overfit one pair: times the unit test
``tests/test_models_crossnet.py::test_small_crossnet_overfits_one_pair``, which asserts only that the loss
falls ≥ 10× and below bicubic's (a wall-clock limit inside a unit test fails on a busy machine, not on a
regression, so the timing lives here).

Runs that test ``--repeats`` times through pytest and prints the duration of each call and their median;
the target is under 60 s on the 2-core CI machine.

    python benchmarks/bench_overfit.py                # 3 repeats
    python benchmarks/bench_overfit.py --repeats 5
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import pytest

TEST = Path(__file__).resolve().parents[1] / "tests" / "test_models_crossnet.py"
NODE = f"{TEST}::test_small_crossnet_overfits_one_pair"


class CallTimes:
    """pytest plugin: records the duration and outcome of each test call phase."""

    def __init__(self):
        self.calls: list[tuple[float, str]] = []

    def pytest_runtest_logreport(self, report):
        if report.when == "call":
            self.calls.append((report.duration, report.outcome))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--target", type=float, default=60.0, help="seconds (default 60)")
    args = parser.parse_args()
    times = CallTimes()
    for _ in range(args.repeats):
        pytest.main(["-q", "-p", "no:cacheprovider", NODE], plugins=[times])
    for i, (seconds, outcome) in enumerate(times.calls, 1):
        print(f"run {i}: {seconds:.1f} s ({outcome})")
    median = statistics.median(s for s, _ in times.calls)
    print(f"median {median:.1f} s to overfit one pair; target < {args.target:.0f} s: "
          f"{'met' if median < args.target else 'MISSED'}")
    sys.exit(0 if all(o == "passed" for _, o in times.calls) else 1)


if __name__ == "__main__":
    main()
