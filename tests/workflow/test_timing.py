"""The end-of-run time table adds up Snakemake's benchmark files per rule."""

from icet.timing import collect_benchmarks, format_time_table

HEADER = "s\th:m:s\tmax_rss\n"


def test_sums_latest_row_per_job_by_rule(tmp_path):
    (tmp_path / "sweep_shard" / "m").mkdir(parents=True)
    (tmp_path / "sweep_shard" / "m" / "a.benchmark.tsv").write_text(HEADER + "9.0\t0:00:09\t1\n2.0\t0:00:02\t1\n")
    (tmp_path / "sweep_shard" / "m" / "b.benchmark.tsv").write_text(HEADER + "3.0\t0:00:03\t1\n")
    (tmp_path / "table2").mkdir()
    (tmp_path / "table2" / "x.benchmark.tsv").write_text(HEADER + "1.5\t0:00:01\t1\n")
    per_rule = collect_benchmarks(tmp_path)
    assert per_rule["sweep_shard"] == {"jobs": 2, "seconds": 5.0, "max": 3.0}
    assert per_rule["table2"]["seconds"] == 1.5
    table = format_time_table(per_rule)
    assert table.splitlines()[2].startswith("| sweep_shard | 2 | 5.0 | 3.0 |")
    assert "| **all** | 3 | 6.5 |" in table
