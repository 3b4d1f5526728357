"""`wmlp profile`: exact parameter counts and both MAC counters within 1% of the spec's figures."""

import json
import subprocess

# thop / torchprofile GMACs of the authors' model at 224x224, as the spec lists them.
SPEC_GMACS = {
    "WaveMLP_T_dw": (2.163, 2.173),
    "WaveMLP_T": (2.462, 2.472),
    "WaveMLP_S": (4.522, 4.538),
    "WaveMLP_M": (7.872, 7.897),
    "WaveMLP_B": (10.215, 10.241),
}
PARAMS = {
    "WaveMLP_T_dw": 15_286_472,
    "WaveMLP_T": 17_193_160,
    "WaveMLP_S": 30_708_040,
    "WaveMLP_M": 44_056_632,
    "WaveMLP_B": 63_586_360,
}


def test_profile_json_all_variants(wmlp_exe):
    out = subprocess.run([wmlp_exe, "profile", "--model", "all", "--format", "json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = {r["model"]: r for r in json.loads(out.stdout)}
    assert set(rows) == set(PARAMS)
    for name, row in rows.items():
        assert row["params"] == PARAMS[name] == row["paper_params"]
        thop_ref, tp_ref = SPEC_GMACS[name]
        assert abs(row["thop_gmacs"] - thop_ref) / thop_ref < 0.01
        assert abs(row["torchprofile_gmacs"] - tp_ref) / tp_ref < 0.01
        assert row["torchprofile_gmacs"] > row["thop_gmacs"]  # norms and element-wise products


def test_profile_table_shows_exact_counts(wmlp_exe):
    out = subprocess.run([wmlp_exe, "profile", "--model", "WaveMLP_T_dw"], capture_output=True, text=True, check=True)
    assert "15,286,472" in out.stdout and "2.163" in out.stdout


def test_bad_flags_are_one_line_errors(wmlp_exe):
    out = subprocess.run([wmlp_exe, "profile", "--model", "WaveMLP_X"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "unknown model 'WaveMLP_X'" in out.stderr
    assert "Traceback" not in out.stderr
    out = subprocess.run([wmlp_exe, "profile", "--img-size", "100"], capture_output=True, text=True)
    assert out.returncode == 2 and "--img-size" in out.stderr and "Traceback" not in out.stderr
