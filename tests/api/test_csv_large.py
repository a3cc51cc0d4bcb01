"""Dataset parsing at scale and at the edges of float32: CSV files past one conversion block (65,536 cells,
10,922 rows of the 6 features here) give exact values; errors name the right row and line in any block and keep
the whole-file order; values beyond float32 are refused in CSV and JSON; the parser's memory (tracemalloc) stays a
small multiple of the file."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from service.config import Settings
from service.errors import Invalid
from service.services.datasets import parse_csv

ROWS = 25000      # three blocks of 10,922 rows, the last one partial


def _csv(values: np.ndarray, labels: list[str], *, blank_every: int = 0) -> str:
    header = ",".join([f"f{j}" for j in range(values.shape[1])] + ["y"])
    lines = [header]
    for i, (row, label) in enumerate(zip(values, labels)):
        if blank_every and i and i % blank_every == 0:
            lines.append("")             # blank lines are skipped and shift line numbers, not row numbers
        lines.append(",".join(repr(float(v)) for v in row) + "," + label)
    return "\n".join(lines) + "\n"


def _data(rows=ROWS, features=6):
    rng = np.random.default_rng(0)
    values = rng.standard_normal((rows, features)).astype(np.float32)
    labels = [("cat", "dog", "bird")[i % 3] for i in range(rows)]
    return values, labels


def test_multi_block_file_is_parsed_exactly():
    values, labels = _data()
    parsed = parse_csv(_csv(values, labels, blank_every=7000).encode(), "y", None, Settings())
    assert parsed.X.dtype == np.float32 and parsed.X.shape == values.shape
    np.testing.assert_array_equal(parsed.X, values)     # repr of a float32 read back as float32: exact
    assert parsed.task == "classification" and parsed.classes == ["bird", "cat", "dog"]
    assert [parsed.classes[k] for k in parsed.y[:4]] == labels[:4]


def _error(text: str) -> Invalid:
    with pytest.raises(Invalid) as info:
        parse_csv(text.encode(), "y", None, Settings())
    return info.value


@pytest.mark.parametrize("row", [5, 10922, 10923, 21845, 21846, ROWS])
def test_a_bad_cell_in_any_block_names_its_row_and_line(row):
    values, labels = _data()
    lines = _csv(values, labels, blank_every=7000).split("\n")
    # data row r sits on line r + 1 + (blank lines before it)
    line = row + 1 + (row - 1) // 7000
    cells = lines[line - 1].split(",")
    cells[3] = "oops"
    lines[line - 1] = ",".join(cells)
    err = _error("\n".join(lines))
    assert f"row {row} (line {line}), column 'f3'" in err.detail and "'oops' is not a number" in err.detail
    assert err.errors[0]["loc"] == ["body", "file", row, "f3"]


def test_a_non_number_anywhere_is_reported_before_an_earlier_nan():
    values, labels = _data()
    values[10, 1] = np.nan          # block 1
    text = _csv(values, labels).split("\n")
    cells = text[20000].split(",")
    cells[0] = "x"                  # block 2
    text[20000] = ",".join(cells)
    err = _error("\n".join(text))
    assert "row 20000" in err.detail and "'x' is not a number" in err.detail
    values[10, 1] = 1.0
    values[15000, 2] = np.inf
    err = _error(_csv(values, labels))
    assert "row 15001" in err.detail and "infinite" in err.detail and err.errors[0]["loc"][-1] == "f2"


def test_a_value_beyond_float32_is_refused_not_turned_into_infinity():
    err = _error("a,b,y\n1,2,0\n3,1e39,1\n5,6,0\n")
    assert "row 2 (line 3), column 'b'" in err.detail and "float32 range" in err.detail
    ok = parse_csv(b"a,b,y\n1,2,0\n3,3e38,1\n5,6,0\n", "y", None, Settings())
    assert np.isfinite(ok.X).all() and ok.X[1, 1] == np.float32(3e38)


def test_python_number_syntax_numpy_does_not_read_is_still_a_number():
    parsed = parse_csv(b"a,b,y\n1_000, 2 ,0\n3,4,1\n5,6,0\n", "y", None, Settings())
    np.testing.assert_array_equal(parsed.X[0], [1000.0, 2.0])


def test_parser_memory_stays_a_small_multiple_of_the_file():
    """Peak Python + numpy allocations while parsing (tracemalloc sees both). Holding every cell as a string
    until the end took over 30 times the file; a block at a time it is the decoded text plus the result."""
    rng = np.random.default_rng(1)
    values = rng.integers(0, 256, size=(5000, 200))
    text = "\n".join([",".join(f"p{j}" for j in range(200)) + ",y"]
                     + [",".join(map(str, row)) + f",{i % 10}" for i, row in enumerate(values)]) + "\n"
    raw = text.encode()
    del text
    tracemalloc.start()
    try:
        parsed = parse_csv(raw, "y", None, Settings())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parsed.X.shape == (5000, 200)
    assert peak < 4 * len(raw), f"parser peak {peak / len(raw):.1f}x the file"


def test_json_features_and_regression_targets_beyond_float32_are_refused(client, auth):
    r = client.post("/v1/datasets", headers=auth, json={"name": "j", "features": [[1.0], [1e39], [2.0]],
                                                         "targets": [0, 1, 0]})
    assert r.status_code == 422 and "float32 range" in r.json()["detail"]
    assert r.json()["errors"][0]["loc"] == ["body", "features", 1, 0]
    r = client.post("/v1/datasets", headers=auth, json={"name": "j", "features": [[1.0], [2.0], [3.0]],
                                                         "targets": [0.5, -1e39, 2.5], "task": "regression"})
    assert r.status_code == 422 and "float32 range" in r.json()["detail"], r.text
    r = client.post("/v1/datasets", headers=auth, files={"file": ("d.csv", b"a,y\n1,0.5\n2,1e39\n3,2.5\n")},
                    data={"name": "c", "target": "y", "task": "regression"})
    assert r.status_code == 422 and "row 2 (line 3), column 'y'" in r.json()["detail"], r.text
