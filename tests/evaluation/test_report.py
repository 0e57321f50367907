"""Report tables (csae_jax/evaluation/report.py): rows against hand-written summaries."""
from csae_jax.evaluation import report


def _summary(display, hms_mean, alive):
  return {"display": display, "alive": alive,
          "hms": {"min": hms_mean - 0.25, "median": hms_mean, "max": hms_mean + 0.25,
                  "mean": hms_mean, "count": 3},
          "recon": {"fvu": 0.125, "l0": 8.0, "dead_fraction": 0.0, "tokens": 64}}


def test_an_ablation_sharing_a_methods_summary_is_listed_once(tmp_path):
  """The full-CSAE ablation is the CSAE method's own run (one summary object): hms_full and
  reconstruction list every method once, the alias not at all, and the other ablation once
  (mutation gap report.write_tables `m != o`)."""
  csae, flat, nocoact = _summary("CSAE", 0.5, 10), _summary("BatchTopK", 0.25, 12), \
      _summary("no co-activation", 0.375, 9)
  summaries = {"csae": csae, "batchtopk": flat, "abl_full": csae, "abl_nocoact": nocoact}
  out = report.write_tables(str(tmp_path), summaries, ["csae", "batchtopk"],
                            ["abl_full", "abl_nocoact"], display={"abl_full": "full CSAE"})
  assert [r[0] for r in out["hms_full"]["rows"]] == ["CSAE", "BatchTopK", "no co-activation"]
  assert out["hms_full"]["rows"][0] == ["CSAE", 0.25, 0.5, 0.75, 0.5, 3, 10]
  assert [r[0] for r in out["reconstruction"]["rows"]] == ["CSAE", "BatchTopK",
                                                           "no co-activation"]
  # Table 4 compares the ablations side by side, the alias included under its own name
  assert out["table4"]["header"] == ["Metric", "full CSAE", "no co-activation"]
  assert out["table4"]["rows"][3] == ["HMS mean", 0.5, 0.375]
  assert (tmp_path / "hms_full.csv").read_text().count("CSAE") == 1
