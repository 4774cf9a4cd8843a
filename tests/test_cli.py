"""The attnbench command: list, check and their error messages."""

import subprocess
import sys
from pathlib import Path

import pytest

import impls
from harness.cli.main import main


def test_list_shows_every_implementation_and_its_availability(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    for impl in impls.registry().values():
        reason = impl.unavailable_reason()
        assert (" yes " if reason is None else f" no: {reason}") in lines[impl.name]


def test_check_agrees_and_exits_zero(capsys):
    assert main(["check", "--impl", "naive,numpy", "--n", "65", "--d", "9", "--causal"]) == 0
    out = capsys.readouterr().out
    assert out.count("agrees") == 4  # two implementations x two dtypes
    assert "all 2 checked implementations agree" in out


def test_check_fails_when_an_implementation_asked_for_cannot_be_checked(capsys, monkeypatch):
    monkeypatch.setattr(impls.get("numpy").module, "unavailable_reason", lambda: "no BLAS here")
    assert main(["check", "--impl", "numpy,naive", "--n", "9", "--d", "3"]) == 1
    out = capsys.readouterr().out
    assert "NOT CHECKED: no BLAS here" in out
    assert "not checked, though asked for: numpy" in out and "agree" not in out.splitlines()[-1]
    assert main(["check", "--n", "9", "--d", "3"]) == 0  # not asked for by name: listed only
    assert "NOT CHECKED: no BLAS here" in capsys.readouterr().out


def test_every_unknown_implementation_is_named_with_its_closest_name(capsys):
    assert main(["check", "--impl", "numpi,numba_paralel,zzz"]) == 2
    err = capsys.readouterr().err
    assert "unknown implementations 'numpi' (did you mean 'numpy'?), " in err
    assert "'numba_paralel' (did you mean 'numba_parallel'?), 'zzz'; valid names:" in err


def test_check_exits_one_when_an_implementation_disagrees(tmp_path, monkeypatch, capsys):
    text = Path(impls.get("numpy").source).read_text()
    text = text.replace('NAME = "numpy"', 'NAME = "wrong"')
    text = text.replace('return state["out"]', 'return state["out"] * 1.01')
    (tmp_path / "wrong.py").write_text(text)
    monkeypatch.setenv(impls.PATH_ENV, str(tmp_path))
    impls.registry(refresh=True)
    try:
        assert main(["check", "--impl", "numpy,wrong", "--n", "20", "--d", "4"]) == 1
    finally:
        monkeypatch.delenv(impls.PATH_ENV)
        impls.registry(refresh=True)
    out = capsys.readouterr().out
    assert "DISAGREES" in out and "some implementations disagree" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["check", "--n", "0"], "--n: expected a positive integer, got '0'"),
        (["check", "--d", "x"], "--d: expected a positive integer, got 'x'"),
        (["check", "--dtype", "float16"], "--dtype: expected float32 or float64, got 'float16'"),
        (["check", "--impl", "numpy,"], "--impl: expected a comma-separated list"),
        (["check", "--impl", "nope"], "--impl: unknown implementation 'nope'; valid names:"),
        (["check", "--seed", "-3"], "--seed: expected a non-negative integer, got '-3'"),
    ],
)
def test_bad_options_get_one_line_naming_the_option(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_python_dash_m_harness_is_the_same_command():
    done = subprocess.run(
        [sys.executable, "-m", "harness", "check", "--impl", "numpy", "--n", "0"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "--n: expected a positive integer" in done.stderr


README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_lists_every_setting_as_a_toml_key():
    from harness.cli.config import ALIASES, KEYS

    paragraph = README.read_text().split("Settings come from the defaults")[1].split("\n\n")[0]
    for key in KEYS:
        spellings = {key} | {alias for alias, name in ALIASES.items() if name == key}
        assert any(f"`{spelling}`" in paragraph for spelling in spellings), key


def test_the_readme_lists_every_case_field_among_the_columns_of_results_csv():
    from harness.results.cases import CASE_FIELDS

    listing = README.read_text().split("results.csv     the tidy table")[1].split("meta.json")[0]
    columns = {word.strip(" ,.()\n") for word in listing.split()}
    assert set(CASE_FIELDS) <= columns


def test_every_run_setting_is_a_flag_named_in_the_help_and_the_readme(capsys):
    """Settings are declared once (SweepConfig's fields): the parser, the help and the errors
    read them; the README's synopsis must name each flag."""
    from harness.cli.config import RUN_FIELDS, flag_name

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = capsys.readouterr().out
    readme = README.read_text()
    for f in RUN_FIELDS:
        assert flag_name(f.name) in help_text, f.name
        assert f"[{flag_name(f.name)}" in readme, f"README's synopsis lacks {flag_name(f.name)}"
