"""Which superseded copies of a job's output are thinned out (fruits_spark.retention)."""
from fruits_spark.retention import superseded_copies


def test_the_published_this_runs_the_newest_three_and_unfinished_ones_stay():
    copies = {f"pca/r{i}": 1000 + i for i in range(8)} | {"pca/unfinished": None}
    assert superseded_copies(copies, keep={"pca/r1", "pca/r8"}) == ["pca/r0", "pca/r2", "pca/r3", "pca/r4"]


def test_equal_times_are_ordered_by_name_and_few_copies_lose_nothing():
    assert superseded_copies({"b": 5, "a": 5, "c": 5, "d": 5}, keep=set()) == ["a"]
    assert superseded_copies({"a": 1, "b": 2, "c": 3}, keep=set()) == []
