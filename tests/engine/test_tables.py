"""CSV tables for the tabular workflow (engine/tables.py)."""

from __future__ import annotations

import io
import statistics
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from engine.core.errors import UserError
from engine.io.tables import load_table

REPO = Path(__file__).resolve().parents[2]
PIMA = REPO / "resources" / "data" / "pima.csv"  # the embedded demo table, shipped with the app


def write(tmp_path: Path, text: str, name: str = "table.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def kinds(table) -> dict[str, str]:
    return {c.name: c.kind for c in table.columns}


# ------------------------------------------------------------------ columns and values


def test_numeric_and_categorical_columns(tmp_path):
    path = write(tmp_path, "age,height,colour,flag\n30,1.80,red,true\n40,1.60,blue,false\n50,1.70,red,true\n")
    table = load_table(path)
    assert table.path == path and table.n_rows == 3
    assert kinds(table) == {"age": "numeric", "height": "numeric", "colour": "categorical", "flag": "categorical"}
    age = table.column("age")
    assert (age.minimum, age.maximum, age.mean) == (30.0, 50.0, 40.0)
    assert age.std == pytest.approx(10.0)  # sample standard deviation
    assert age.missing == 0 and age.categories == ()
    height = table.column("height")
    assert height.mean == pytest.approx(1.7) and height.std == pytest.approx(statistics.stdev([1.8, 1.6, 1.7]))
    colour = table.column("colour")
    assert colour.categories == ("blue", "red") and colour.minimum is None and colour.mean is None
    assert table.column("flag").categories == ("False", "True")
    assert table.target is None and table.features == ["age", "height", "colour", "flag"]
    assert table.warnings == [] and table.missing_counts == {}


def test_mixed_numbers_and_text_is_categorical(tmp_path):
    table = load_table(write(tmp_path, "a,b\n1,x\n2,3\nthree,4\n"))
    assert kinds(table) == {"a": "categorical", "b": "categorical"}
    assert table.column("a").categories == ("1", "2", "three")


def test_single_numeric_value_has_zero_std(tmp_path):
    info = load_table(write(tmp_path, "a,b\n5,x\n")).column("a")
    assert (info.kind, info.minimum, info.maximum, info.mean, info.std) == ("numeric", 5.0, 5.0, 5.0, 0.0)


def test_missing_values_counted_per_column_and_reported(tmp_path):
    text = "a,b,c,d\n1,x,?,7\nNA,y,3,8\n,z,4,9\n5,?,NA,10\n6,N/A,null,11\n"
    table = load_table(write(tmp_path, text))
    assert {c.name: c.missing for c in table.columns} == {"a": 2, "b": 2, "c": 3, "d": 0}
    assert table.missing_counts == {"a": 2, "b": 2, "c": 3}
    # A numeric column stays numeric with its missing markers.
    assert kinds(table) == {"a": "numeric", "b": "categorical", "c": "numeric", "d": "numeric"}
    assert table.column("c").minimum == 3.0 and table.column("c").maximum == 4.0
    assert table.column("b").categories == ("x", "y", "z")
    assert table.warnings == [
        "column 'a' has 2 missing value(s) of 5",
        "column 'b' has 2 missing value(s) of 5",
        "column 'c' has 3 missing value(s) of 5",
    ]
    assert table.n_rows == 5  # missing values are reported, rows are not dropped


def test_negative_numbers_are_not_mistaken_for_the_dash_marker(tmp_path):
    table = load_table(write(tmp_path, "a,b\n-1,-\n-2.5,4\n"))
    assert table.column("a").missing == 0 and table.column("a").minimum == -2.5
    assert table.column("b").missing == 1 and table.column("b").kind == "numeric"


def test_target_column_is_chosen(tmp_path):
    table = load_table(write(tmp_path, "x1,x2,label\n1,2,yes\n3,4,no\n"), target="label")
    assert table.target == "label"
    assert table.features == ["x1", "x2"]
    assert table.column("label").categories == ("no", "yes")


def test_missing_target_column_names_the_available_columns(tmp_path):
    path = write(tmp_path, "x1,x2,label\n1,2,yes\n3,4,no\n")
    with pytest.raises(UserError, match="no target column 'class'") as info:
        load_table(path, target="class")
    assert "x1, x2, label" in str(info.value)


def test_unknown_column_lookup_names_the_columns(tmp_path):
    table = load_table(write(tmp_path, "x1,x2\n1,2\n"))
    with pytest.raises(UserError, match="no column 'x3'.*x1, x2"):
        table.column("x3")


@pytest.mark.parametrize("sep", [";", "\t", ","])
def test_delimiters(tmp_path, sep):
    rows = [["a", "b", "c"], ["1.5", "2", "x"], ["3.5", "4", "y"]]
    table = load_table(write(tmp_path, "\n".join(sep.join(r) for r in rows) + "\n"), target="c")
    assert list(table.frame.columns) == ["a", "b", "c"]
    assert kinds(table) == {"a": "numeric", "b": "numeric", "c": "categorical"}
    assert table.frame["a"].tolist() == [1.5, 3.5]


def test_semicolon_file_with_commas_in_quoted_text(tmp_path):
    table = load_table(write(tmp_path, 'name;score\n"Smith, J";1\n"Doe, A";2\n'))
    assert table.frame["name"].tolist() == ["Smith, J", "Doe, A"]
    assert table.column("score").kind == "numeric"


def test_spaces_around_header_names_and_values(tmp_path):
    table = load_table(write(tmp_path, " a , b\n 1, x\n 2, NA\n"))
    assert list(table.frame.columns) == ["a", "b"]
    assert table.column("a").kind == "numeric" and table.column("b").missing == 1


def test_byte_order_mark_is_not_part_of_the_first_name(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("a,b\n1,2\n".encode("utf-8-sig"))
    table = load_table(path, target="a")
    assert list(table.frame.columns) == ["a", "b"] and table.target == "a"


def test_trailing_delimiter_on_data_rows_keeps_columns_aligned(tmp_path):
    table = load_table(write(tmp_path, "a,b\n1,2,\n3,4,\n"))
    assert table.frame["a"].tolist() == [1, 3] and table.frame["b"].tolist() == [2, 4]
    assert table.missing_counts == {}


def test_rows_with_extra_fields_are_refused(tmp_path):
    with pytest.raises(UserError, match="more fields than the header"):
        load_table(write(tmp_path, "a,b\n1,2,3\n4,5,6\n"))
    with pytest.raises(UserError, match="Expected 3 fields"):
        load_table(write(tmp_path, "a,b,c\n1,2,3\n4,5,6,7\n"))


# ------------------------------------------------------------------ refusing bad files


def test_duplicate_column_names_are_refused(tmp_path):
    with pytest.raises(UserError, match=r"unique name.*\(a\)"):
        load_table(write(tmp_path, "a,b,a\n1,2,3\n"))
    with pytest.raises(UserError, match=r"unique name.*\(b\)"):
        load_table(write(tmp_path, "a,b, b\n1,2,3\n"))
    # A column really called "a.1" beside "a" is fine.
    assert list(load_table(write(tmp_path, "a,a.1\n1,2\n")).frame.columns) == ["a", "a.1"]


def test_empty_header_cell_is_refused(tmp_path):
    with pytest.raises(UserError, match="an empty header cell"):
        load_table(write(tmp_path, "a,,c\n1,2,3\n"))


@pytest.mark.parametrize("text", ["a\n1\n2\n3\n", "name\nalice\nbob\n", "1.5\n2.5\n"], ids=["numbers", "words", "no-header"])
def test_one_column_file_is_refused(tmp_path, text):
    with pytest.raises(UserError, match=r"at least two columns.*found 1 column"):
        load_table(write(tmp_path, text))


@pytest.mark.parametrize("text", ["", "\n\n\n", "   \n"], ids=["empty", "blank-lines", "spaces"])
def test_empty_file_is_refused(tmp_path, text):
    with pytest.raises(UserError, match="not a readable CSV|at least two columns"):
        load_table(write(tmp_path, text))


def test_header_without_rows_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"one row.*0 row"):
        load_table(write(tmp_path, "a,b,c\n"))


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, "PNG")
    return buffer.getvalue()


def _npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.arange(12.0).reshape(3, 4))
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content",
    [_png_bytes(), _npy_bytes(), bytes(np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8)), "a,b\ncafé,1\n".encode("latin-1")],
    ids=["png", "npy", "random-bytes", "latin-1"],
)
def test_binary_files_are_refused(tmp_path, content):
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    with pytest.raises(UserError, match="not a text CSV file") as info:
        load_table(path)
    assert "data.csv" in str(info.value)


@pytest.mark.parametrize(
    "text",
    ["This is just some text.\nIt is not a table at all.\n", '{"a": 1, "b": [1, 2, 3]}\n'],
    ids=["prose", "json"],
)
def test_text_that_is_not_a_table_is_refused(tmp_path, text):
    with pytest.raises(UserError):
        load_table(write(tmp_path, text, "notes.csv"))


def test_missing_path_and_folder_are_refused(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_table(tmp_path / "missing.csv")
    with pytest.raises(UserError, match="is a folder"):  # not "no such file": the folder exists
        load_table(tmp_path)


# ------------------------------------------------------------------ properties and the demo file


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    columns=st.lists(
        st.lists(st.one_of(st.none(), st.integers(-1000, 1000)), min_size=4, max_size=4).filter(lambda c: any(v is not None for v in c)),
        min_size=2,
        max_size=5,
    ),
    marker=st.sampled_from(["", "NA", "?", "null"]),
)
def test_random_numeric_tables_round_trip(tmp_path, columns, marker):
    names = [f"c{i}" for i in range(len(columns))]
    lines = [",".join(names)] + [",".join(marker if col[r] is None else str(col[r]) for col in columns) for r in range(4)]
    table = load_table(write(tmp_path, "\n".join(lines) + "\n"))
    assert table.n_rows == 4
    for name, col in zip(names, columns, strict=True):
        present = [v for v in col if v is not None]
        info = table.column(name)
        assert info.kind == "numeric"
        assert info.missing == col.count(None)
        assert (info.minimum, info.maximum) == (min(present), max(present))
        assert info.mean == pytest.approx(statistics.fmean(present))
    assert table.missing_counts == {n: c.count(None) for n, c in zip(names, columns, strict=True) if None in c}
    assert len(table.warnings) == len(table.missing_counts)


def test_pima_demo_file():
    table = load_table(PIMA, target="type")
    assert table.n_rows == 532
    numeric = ["npreg", "glu", "bp", "skin", "bmi", "ped", "age"]
    assert kinds(table) == {**{name: "numeric" for name in numeric}, "type": "categorical", "split": "categorical"}
    assert table.target == "type"
    assert table.features == [*numeric, "split"]
    assert table.column("type").categories == ("No", "Yes")
    assert table.column("split").categories == ("test", "train")
    assert table.missing_counts == {} and table.warnings == []
    assert table.frame.iloc[0][numeric].tolist() == [5, 86, 68, 28, 30.2, 0.364, 24]
    assert table.column("npreg").minimum == 0.0
    assert table.column("glu").maximum <= 200.0 and table.column("bmi").minimum > 0.0
