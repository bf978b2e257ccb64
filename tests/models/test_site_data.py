from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedseal.models.data import load_csv_examples, load_federated_dataset, load_site_data
from fedseal.models.data import site_cache as site_cache_module
from fedseal.models.data.site_cache import site_cache_path
from fedseal.models.data.summary import render_datasets_doc

DOCS = Path(__file__).resolve().parents[2] / "docs" / "datasets.md"


def test_site_data_matches_full_build_and_is_cached(tmp_path, monkeypatch) -> None:
    full = load_federated_dataset("heart", 3, seed=2)
    split, labels = load_site_data("heart", "hungary", 3, seed=2, cache_dir=tmp_path)
    assert split == full.sites["hungary"]
    assert split.validation == full.sites["hungary"].validation
    assert labels == full.labels
    # only the site's own split is cached: nothing of another site's, no global test set
    assert [p.name for p in tmp_path.iterdir()] == [
        site_cache_path(tmp_path, "heart", "hungary", 3, 2).name
    ]
    cached_text = site_cache_path(tmp_path, "heart", "hungary", 3, 2).read_text()
    for other in ("cleveland", "va_long_beach"):
        assert all(t not in cached_text for t in full.sites[other].train.texts[:20])
    assert "global_test" not in cached_text

    def no_rebuild(*args, **kwargs):
        raise AssertionError("rebuilt despite the cache")

    monkeypatch.setattr(site_cache_module, "load_federated_dataset", no_rebuild)
    cached = load_site_data("heart", "hungary", 3, seed=2, cache_dir=tmp_path)
    assert cached == (full.sites["hungary"], full.labels)
    assert cached[0].validation == full.sites["hungary"].validation


def test_corrupt_cache_is_rebuilt(tmp_path) -> None:
    path = site_cache_path(tmp_path, "banks", "bank_south", 2, 0)
    path.write_text("{not json")
    split, labels = load_site_data("banks", "bank_south", 2, cache_dir=tmp_path)
    assert labels == ("good", "bad") and len(split.train) > 0
    assert path.read_text().startswith("{")


def test_site_data_without_cache_and_bad_site() -> None:
    split, _ = load_site_data("heart", "switzerland", 4)
    assert split.name == "switzerland" and len(split.test) > 0
    with pytest.raises(ValueError, match="cleveland, hungary"):
        load_site_data("heart", "switzerland", 2)
    with pytest.raises(ValueError, match="valid scenarios"):
        load_site_data("mars", "x", 2)


def test_csv_examples(tmp_path) -> None:
    path = tmp_path / "notes.csv"
    rows = ["note,outcome,other", '"chest pain, sweating",disease,1', "routine check,healthy,2"]
    path.write_text("\n".join(rows) + "\n")
    examples = load_csv_examples(path, "note", "outcome", ["healthy", "disease"])
    assert examples.texts == ("chest pain, sweating", "routine check")
    assert examples.labels.tolist() == [1, 0]

    with pytest.raises(FileNotFoundError, match=r"missing\.csv"):
        load_csv_examples(tmp_path / "missing.csv", "note", "outcome", ["healthy", "disease"])
    with pytest.raises(ValueError, match=r"'text'.*columns present: note, outcome, other"):
        load_csv_examples(path, "text", "outcome", ["healthy", "disease"])
    with pytest.raises(ValueError, match=r"line 2: unknown label 'disease'"):
        load_csv_examples(path, "note", "outcome", ["healthy", "sick"])
    empty = tmp_path / "empty.csv"
    empty.write_text("note,outcome\n")
    with pytest.raises(ValueError, match="no data rows"):
        load_csv_examples(empty, "note", "outcome", ["healthy", "disease"])
    assert np.array_equal(examples.labels, np.array([1, 0]))


def test_docs_table_is_generated_from_code() -> None:
    assert DOCS.read_text(encoding="utf-8") == render_datasets_doc()
