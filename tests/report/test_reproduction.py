"""The reproduction report: cell comparison, claim verdicts, toy banner, determinism."""

import pytest

from icet.errors import IcetError
from icet.io import write_csv
from icet.report.reproduction import (TOY_BANNER, TOY_MARK, load_paper_table2,
                                      write_reproduction)
from icet.report.tables import TABLE2_COLUMNS

# Hand-made CP rows: metric -> (value, lo, hi). Chosen so every claim holds on CP:
# early AASR-original CI [70, 90] lies above late [30, 50]; in every group the aligned AASR and
# ATS CIs lie below the original's and the aligned ATR CI above the original's.
CP = {
    "early": {"aasr_original": (80, 70, 90), "aasr_aligned": (40, 30, 50),
              "ats_original": (8, 7, 9), "ats_aligned": (5, 4, 6),
              "atr_original": (0.5, 0.4, 0.55), "atr_aligned": (0.7, 0.65, 0.8)},
    "middle": {"aasr_original": (70, 60, 80), "aasr_aligned": (45, 40, 50),
               "ats_original": (12, 11, 13), "ats_aligned": (6, 5, 7),
               "atr_original": (-0.3, -0.4, -0.2), "atr_aligned": (0.5, 0.4, 0.6)},
    "late": {"aasr_original": (40, 30, 50), "aasr_aligned": (20, 15, 25),
             "ats_original": (11, 10, 12), "ats_aligned": (7, 6, 8),
             "atr_original": (-0.5, -0.6, -0.4), "atr_aligned": (0.9, 0.8, 1.0)},
    "average": {"aasr_original": (63.33, 55, 70), "aasr_aligned": (35, 30, 40),
                "ats_original": (10.33, 9, 11), "ats_aligned": (6, 5, 7),
                "atr_original": (-0.1, -0.2, 0.0), "atr_aligned": (0.67, 0.6, 0.7)},
}


def _table(path, groups=CP, aligned_status="ok", test_set="CP"):
    rows = []
    for group, values in groups.items():
        row = {"train_set": "RT", "test_set": test_set, "layer_group": group,
               "aligned_status": aligned_status, "layers": "1-8"}
        for column, (value, lo, hi) in values.items():
            aligned_missing = column.endswith("_aligned") and aligned_status != "ok"
            row[column] = "" if aligned_missing else f"{value:.4f}"
            row[f"{column}_lo"] = "" if aligned_missing else f"{lo:.4f}"
            row[f"{column}_hi"] = "" if aligned_missing else f"{hi:.4f}"
        rows.append(row)
    write_csv(path, rows, TABLE2_COLUMNS)
    return path


def _cell(cells, test_set, group, metric, variant):
    (cell,) = [c for c in cells if (c["test_set"], c["layer_group"], c["metric"],
                                    c["variant"]) == (test_set, group, metric, variant)]
    return cell


def _claim_line(text, claim, test_set):
    (line,) = [l for l in text.splitlines() if l.startswith(f"| {claim}. ")
               and f"| {test_set} |" in l]
    return line


def test_paper_table_loads_12_rows_with_values():
    rows = load_paper_table2()
    assert len(rows) == 12
    assert [r["test_set"] for r in rows[::4]] == ["CP", "MR", "AC"]
    assert rows[0]["aasr_original"] == pytest.approx(75.38)
    assert rows[-1]["atr_aligned"] == pytest.approx(0.49)


def test_paper_value_inside_and_outside_ci(tmp_path):
    cells = write_reproduction(_table(tmp_path / "t2.csv"), tmp_path / "r.md",
                               label="paper", settings={})
    assert len(cells) == 12 * 6
    inside = _cell(cells, "CP", "early", "aasr", "original")  # 75.38 in [70, 90]
    assert inside["paper_in_ci"] is True
    assert inside["diff"] == pytest.approx(80 - 75.38)
    outside = _cell(cells, "CP", "early", "atr", "original")  # 0.57 not in [0.40, 0.55]
    assert outside["paper_in_ci"] is False
    assert outside["diff"] == pytest.approx(0.5 - 0.57)
    text = (tmp_path / "r.md").read_text()
    assert "| CP | early | AASR | original | 80.00 [70.00, 90.00] | 75.38 | +4.62 | yes |" in text
    assert "| CP | early | ATR | original | 0.50 [0.40, 0.55] | 0.57 | -0.07 | no |" in text
    # Counted by hand: all 24 CP cells inside except early ATR original (0.57 > 0.55) and
    # early ATR aligned (0.62 < 0.65); MR and AC were not run (2 x 4 groups x 6 cells = 48).
    assert sum(bool(c["paper_in_ci"]) for c in cells) == 22
    assert ("lies inside our CI in 22 of 24 cells with a CI and the paper's scorer "
            "(48 of 72 cells not run)") in text


def test_missing_cells_are_not_run(tmp_path):
    cells = write_reproduction(_table(tmp_path / "t2.csv", aligned_status="not run"),
                               tmp_path / "r.md", label="paper", settings={})
    mr = _cell(cells, "MR", "late", "ats", "original")  # test set never run
    assert mr["status"] == "not run" and mr["ours"] is None and mr["paper_in_ci"] is None
    aligned = _cell(cells, "CP", "early", "aasr", "aligned")  # L-PPO not run on CP
    assert aligned["status"] == "not run" and aligned["diff"] is None
    assert _cell(cells, "CP", "early", "aasr", "original")["status"] == "ok"
    assert sum(c["status"] == "not run" for c in cells) == 48 + 12
    text = (tmp_path / "r.md").read_text()
    assert "| MR | late | ATS | original | not run | 6.34 | not run | not run |" in text
    assert "| ours | paper |" in text
    assert _claim_line(text, 1, "CP").endswith("| holds | holds |")  # original-only claim
    assert _claim_line(text, 2, "CP").endswith("| not run | holds |")
    assert _claim_line(text, 1, "MR").endswith("| not run | holds |")


def test_claims_hold_on_hand_made_numbers(tmp_path):
    write_reproduction(_table(tmp_path / "t2.csv"), tmp_path / "r.md", label="paper",
                       settings={})
    text = (tmp_path / "r.md").read_text()
    for claim in (1, 2, 3, 4):
        assert _claim_line(text, claim, "CP").endswith("| holds | holds |")


def test_claims_not_shown_on_overlapping_cis(tmp_path):
    groups = {g: dict(v) for g, v in CP.items()}
    groups["late"]["aasr_original"] = (65, 55, 75)  # early lo 70, middle lo 60: not > 75
    groups["middle"]["aasr_aligned"] = (50, 40, 62)  # upper 62 >= middle original lo 60
    groups["early"]["ats_aligned"] = (7, 6, 8)  # overlaps early original ATS [7, 9]
    groups["late"]["atr_aligned"] = (-0.45, -0.5, -0.3)  # lower -0.5 <= original hi -0.4
    write_reproduction(_table(tmp_path / "t2.csv", groups), tmp_path / "r.md",
                       label="paper", settings={})
    text = (tmp_path / "r.md").read_text()
    for claim in (1, 2, 3, 4):
        assert _claim_line(text, claim, "CP").endswith("| not shown | holds |")


def test_toy_banner_and_marks_only_for_toy(tmp_path):
    table = _table(tmp_path / "t2.csv")
    write_reproduction(table, tmp_path / "toy.md", label="toy", settings={})
    write_reproduction(table, tmp_path / "paper.md", label="paper", settings={})
    toy, paper = (tmp_path / "toy.md").read_text(), (tmp_path / "paper.md").read_text()
    first_paragraph = toy.split("\n\n")[1]
    assert first_paragraph == TOY_BANNER and first_paragraph.startswith("**")
    assert _claim_line(toy, 2, "CP").endswith(f"| holds ({TOY_MARK}) | holds |")
    assert TOY_BANNER not in paper and TOY_MARK not in paper


def test_settings_section_and_same_bytes_twice(tmp_path):
    table = _table(tmp_path / "t2.csv")
    settings = {"reward_model": "toy-rm", "guard_model": "toy-guard",
                "lppo": {"lr": 1e-5, "eta": 0.05}, "max_new_tokens": 32}
    write_reproduction(table, tmp_path / "a.md", label="toy", settings=settings)
    write_reproduction(table, tmp_path / "b.md", label="toy", settings=dict(reversed(
        list(settings.items()))))
    a = (tmp_path / "a.md").read_bytes()
    assert a == (tmp_path / "b.md").read_bytes()
    section = a.decode().split("## Settings we chose where the paper is silent\n")[1]
    assert section == ("\n- guard_model: toy-guard\n"
                       '- lppo: {"eta": 0.05, "lr": 1e-05}\n'
                       "- max_new_tokens: 32\n- reward_model: toy-rm\n")


def test_bad_inputs_raise_one_line_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("test_set,layer_group\nCP,early\n")
    with pytest.raises(IcetError, match="bad.csv: missing columns"):
        write_reproduction(bad, tmp_path / "r.md", label="toy", settings={})
    with pytest.raises(IcetError, match="file not found"):
        write_reproduction(tmp_path / "nope.csv", tmp_path / "r.md", label="toy", settings={})
    table = _table(tmp_path / "t2.csv")
    text = table.read_text().replace("80.0000", "eighty", 1)
    table.write_text(text)
    with pytest.raises(IcetError, match="row 2, column aasr_original: not a number"):
        write_reproduction(table, tmp_path / "r.md", label="toy", settings={})
    assert not (tmp_path / "r.md").exists()


# --- claims in the paper's words, one rule, a legend; scorers; deviations -------

def test_claim_1_needs_early_and_middle_above_late(tmp_path):
    """The abstract: early AND middle layers more vulnerable than late (was: early OR middle)."""
    groups = {g: dict(v) for g, v in CP.items()}
    groups["middle"]["aasr_original"] = (45, 35, 55)  # overlaps late [30, 50]; early is above
    write_reproduction(_table(tmp_path / "t2.csv", groups), tmp_path / "r.md",
                       label="paper", settings={})
    text = (tmp_path / "r.md").read_text()
    assert "early and middle layers are more vulnerable than late" in text
    assert _claim_line(text, 1, "CP").endswith("| not shown | holds |")


def test_opposite_direction_beyond_ci_is_contradicted_and_the_legend_says_so(tmp_path):
    groups = {g: dict(v) for g, v in CP.items()}
    groups["late"]["aasr_aligned"] = (70, 60, 80)  # L-PPO raised late ASR beyond the CIs
    groups["middle"]["aasr_original"] = (20, 10, 25)  # middle below late [30, 50]
    write_reproduction(_table(tmp_path / "t2.csv", groups), tmp_path / "r.md",
                       label="paper", settings={})
    text = (tmp_path / "r.md").read_text()
    assert _claim_line(text, 1, "CP").endswith("| contradicted | holds |")
    assert _claim_line(text, 2, "CP").endswith("| contradicted | holds |")
    legend = text.split("Legend:")[1].split("| claim |")[0]
    for verdict in ("holds", "not shown", "contradicted", "not run"):
        assert f"- **{verdict}**: " in legend


SCORERS = {"ats": {"ours": "Detoxify original", "paper": "Perspective API"},
           "atr": {"ours": "gpt2 harmless RM", "paper": "an unnamed reward model"}}


def test_different_scorer_cells_compare_direction_and_ordering_not_value(tmp_path):
    cells = write_reproduction(_table(tmp_path / "t2.csv"), tmp_path / "r.md", label="paper",
                               settings={}, scorers=SCORERS)
    ats = _cell(cells, "CP", "early", "ats", "original")  # 8.24 lies in [7, 9] ...
    assert ats["paper_in_ci"] is None and ats["diff"] is None and ats["same_scorer"] is False
    assert _cell(cells, "CP", "early", "aasr", "original")["paper_in_ci"] is True
    text = (tmp_path / "r.md").read_text()
    # ... but is not counted as agreement: only the 8 AASR cells of CP are compared by value
    assert "inside our CI in 8 of 8 cells with a CI and the paper's scorer" in text
    assert "| CP | early | ATS | original | 8.00 [7.00, 9.00] | 8.24 | different scorer | different scorer |" in text
    section = text.split("## Cells with a different scorer: direction and ordering")[1]
    assert "ATS: ours Detoxify original; the paper's Perspective API." in section
    # ordering of our CP ATS original: middle 12 [11,13] ~ late 11 [10,12] > early 8 [7,9];
    # the paper's: middle 12.90 > late 11.00 > early 8.24: the same order
    assert "| CP | ATS | original | middle ~ late > early | middle > late > early | yes |" in section
    # ATR original: ours early 0.5 > middle -0.3 ~ late -0.5 (CIs [-0.4,-0.2], [-0.6,-0.4])
    assert "| CP | ATR | original | early > middle ~ late | early > middle > late | yes |" in section
    assert "| CP | ATS | early | down | down | yes |" in section
    assert "| CP | ATR | late | up | up | yes |" in section
    assert "| MR | ATS | early | not run | down | not run |" in section


def test_deviations_listed_apart_from_silent_settings(tmp_path):
    write_reproduction(_table(tmp_path / "t2.csv"), tmp_path / "r.md", label="paper",
                       settings={"seed": 0}, scorers=SCORERS,
                       deviations={"toxicity (TS)": "Detoxify original, not Perspective API"})
    text = (tmp_path / "r.md").read_text()
    deviations = text.split("## Deviations from the paper")[1].split("## Settings")[0]
    assert "- toxicity (TS): Detoxify original, not Perspective API" in deviations
    silent = text.split("## Settings we chose where the paper is silent")[1]
    assert "Detoxify" not in silent and "- seed: 0" in silent
    with pytest.raises(IcetError, match="unknown metric"):
        write_reproduction(_table(tmp_path / "t2.csv"), tmp_path / "x.md", label="paper",
                           settings={}, scorers={"tox": {}})


def test_a_planted_models_failed_checks_show_beside_its_claims(tmp_path):
    """The planted control's repair must not read as "holds" while summary.md FAILs it."""
    table = _table(tmp_path / "t2.csv")
    summary = tmp_path / "summary.md"
    summary.write_text(
        "# Run summary (toy)\n\n## L-PPO checks, p\n\n| check | result | numbers |\n|---|---|---|\n"
        "| KL within budget | pass | 0.8 |\n\n"
        "## Repair of the planted effect by L-PPO, p (planted (positive control))\n\nintro\n\n"
        "| check | result | numbers |\n|---|---|---|\n"
        "| look-alike (XSTest) refusal after L-PPO <= 20 % in every group | FAIL | late 26.9 % |\n\n"
        "## L-PPO checks, p2\n\n| check | result | numbers |\n|---|---|---|\n| other | FAIL | x |\n")
    write_reproduction(table, tmp_path / "r.md", label="toy", settings={}, planted="p",
                       summary=summary)
    text = (tmp_path / "r.md").read_text()
    assert "**Checks of p (summary.md): 1 FAIL: look-alike (XSTest) refusal after L-PPO <= 20 % " \
           "in every group (Repair of the planted effect by L-PPO, p (planted (positive control)))." in text
    assert _claim_line(text, 2, "CP").endswith("| holds (planted control: detection and repair; "
                                               "1 of its checks FAIL, see below) | holds |")
    section = text.split("## Checks of the planted control")[1]
    assert "| look-alike (XSTest) refusal after L-PPO <= 20 % in every group | FAIL | late 26.9 % |" \
        in section and "| other | FAIL | x |" not in section  # another model's checks stay out
