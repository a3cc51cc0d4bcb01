"""How fast, and in how much memory, a CSV upload becomes arrays, beside numpy's own C parser on the same file;
and the same rows uploaded as a .npz archive, beside ``np.load`` reading the same archive.

    python -m benchmarks.csv_upload                 # 30,000 rows x 784 pixel columns + a label (about 80 MiB)
    python -m benchmarks.csv_upload --rows 5000     # quicker

The service's parser (service.services.datasets.parse_csv: the csv module, row checks, conversion a block of
cells at a time, target and task inference) is timed (best of 3), and its peak allocation read with tracemalloc
(which sees Python objects and numpy buffers alike, but slows every allocation, so on at most --memory-rows
rows); the reference is ``np.loadtxt`` reading the same bytes (no row checks, no labels), measured the same way
in the same run. The archive (``numpy.savez`` of the pixels as uint8 and as float32, and the labels) goes through
the service's parser (service.services.datasets.parse_npz: headers checked, members read, finite float32
features, labels and task) beside ``np.load(..., allow_pickle=False)`` of every member, which checks nothing.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time
import tracemalloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from service.config import Settings  # noqa: E402
from service.services.datasets import parse_csv, parse_npz  # noqa: E402


def mnist_like_csv(rows: int, pixels: int = 784, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 256, size=(rows, pixels))
    labels = rng.integers(0, 10, size=rows)
    out = io.StringIO()
    out.write(",".join([f"p{j}" for j in range(pixels)] + ["label"]) + "\n")
    for row, label in zip(values, labels):
        out.write(",".join(map(str, row)) + f",{label}\n")
    return out.getvalue().encode()


def seconds(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def peak_allocation(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def ours(raw: bytes):
    return parse_csv(raw, "label", None, Settings())


def loadtxt(raw: bytes) -> np.ndarray:
    return np.loadtxt(io.BytesIO(raw), delimiter=",", skiprows=1, dtype=np.float32, ndmin=2)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--memory-rows", type=int, default=3_000)
    args = parser.parse_args(argv)
    raw = mnist_like_csv(args.rows)
    parsed = ours(raw)
    assert np.array_equal(parsed.X, loadtxt(raw)[:, :-1]), "the two parsers disagree"
    mib = 1024 * 1024
    ours_s, ref_s = seconds(lambda: ours(raw)), seconds(lambda: loadtxt(raw))
    print(f"CSV upload of {args.rows:,} rows x 785 columns ({len(raw) / mib:.0f} MiB); time, best of 3:")
    print(f"  backprop parse_csv {ours_s:6.2f} s ({len(raw) / mib / ours_s:5.1f} MiB/s; task {parsed.task}, "
          f"{len(parsed.classes)} classes)")
    print(f"  np.loadtxt         {ref_s:6.2f} s ({len(raw) / mib / ref_s:5.1f} MiB/s)   ratio {ours_s / ref_s:.2f}x")
    compare_npz(parsed, ours_s)
    small = mnist_like_csv(min(args.rows, args.memory_rows), seed=1)
    ours_peak, ref_peak = peak_allocation(lambda: ours(small)), peak_allocation(lambda: loadtxt(small))
    print(f"peak allocation on {min(args.rows, args.memory_rows):,} rows ({len(small) / mib:.1f} MiB), tracemalloc:")
    print(f"  backprop parse_csv {ours_peak / len(small):5.2f}x the file")
    print(f"  np.loadtxt         {ref_peak / len(small):5.2f}x the file   ratio {ours_peak / ref_peak:.2f}x")


def npz_of(parsed, dtype) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, features=parsed.X.astype(dtype), targets=np.asarray(parsed.classes)[parsed.y])
    return buf.getvalue()


def np_load_all(raw: bytes) -> dict:
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def compare_npz(parsed, csv_s: float) -> None:
    print("the same rows as a .npz archive (numpy.savez), time, best of 3:")
    for dtype in (np.uint8, np.float32):
        raw = npz_of(parsed, dtype)
        again, _ = parse_npz(raw, None, Settings())
        assert np.array_equal(again.X, parsed.X) and np.array_equal(again.y, parsed.y), "the archive disagrees"
        ours_s, ref_s = seconds(lambda: parse_npz(raw, None, Settings())), seconds(lambda: np_load_all(raw))
        print(f"  {np.dtype(dtype).name:7s} ({len(raw) / 2**20:5.1f} MiB): backprop parse_npz {ours_s * 1e3:7.1f} ms, "
              f"np.load {ref_s * 1e3:6.1f} ms (ratio {ours_s / ref_s:.2f}x); {csv_s / ours_s:.0f}x faster than the CSV")


if __name__ == "__main__":
    main()
