"""The registry finds implementations by itself, and `attnbench new` makes a working one."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import impls
from harness.cli.main import main
from harness.cli.scaffold import create_implementation
from harness.worker import checking
from harness.worker.inputs import make_qkv

FOUR = ["naive", "numpy", "numba_parallel", "numba_cuda"]


@pytest.fixture
def extra_impls(tmp_path, monkeypatch):
    """A directory on ATTNBENCH_IMPLS_PATH; the registry is rebuilt with it and after it."""
    monkeypatch.setenv(impls.PATH_ENV, str(tmp_path))
    yield tmp_path
    monkeypatch.delenv(impls.PATH_ENV)
    impls.registry(refresh=True)


def test_the_four_implementations_are_registered():
    assert set(FOUR) <= set(impls.names())


WITHOUT_OPTIONAL_PARTS = """
import sys
for package in ("numba_cuda", "torch"):
    sys.modules[package] = None  # as if not installed: importing it raises ImportError
import impls
for name in ("numba_cuda", "torch_sdpa"):
    print(name, impls.get(name).unavailable_reason())
"""


def test_import_impls_needs_no_optional_part():
    """Without numba-cuda and torch, `import impls` still works and lists numba_cuda and
    torch_sdpa, each saying why it cannot run (here, not at import)."""
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_OPTIONAL_PARTS], capture_output=True, text=True,
        cwd=Path(__file__).resolve().parents[1], timeout=120, check=True,
    )  # fmt: skip
    reasons = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert "numba-cuda" in reasons["numba_cuda"], reasons
    assert "torch" in reasons["torch_sdpa"], reasons


def test_a_module_that_fails_to_import_is_listed_unavailable_with_its_error(extra_impls):
    (extra_impls / "broken.py").write_text("import no_such_package_xyz\n")
    (extra_impls / "syntax.py").write_text("def f(:\n")
    registry = impls.registry(refresh=True)
    assert "No module named 'no_such_package_xyz'" in registry["broken"].unavailable_reason()
    assert "SyntaxError" in registry["syntax"].unavailable_reason()
    assert registry["numpy"].available


def test_a_module_missing_part_of_the_surface_is_unavailable(extra_impls):
    (extra_impls / "partial.py").write_text("DESCRIPTION = 'x'\n")
    reason = impls.registry(refresh=True)["partial"].unavailable_reason()
    assert "DTYPES" in reason and "prepare" in reason


def test_a_style_that_is_not_a_colour_and_a_marker_makes_the_module_unavailable(extra_impls):
    source = Path(impls.registry()["numpy"].source).read_text()
    text = source.replace('NAME = "numpy"', 'NAME = "red"').replace(
        'STYLE = ("#1f77b4", "o")', 'STYLE = "red"'
    )
    (extra_impls / "red.py").write_text(text)
    (extra_impls / "teal.py").write_text(
        text.replace('NAME = "red"', 'NAME = "teal"').replace(
            'STYLE = "red"', 'STYLE = ("teal", "x")'
        )
    )
    registry = impls.registry(refresh=True)
    assert (
        "STYLE must be a (colour, marker) pair, got 'red'" in registry["red"].unavailable_reason()
    )
    assert registry["teal"].available and registry["teal"].style == ("teal", "x")


def test_an_unavailable_implementation_refuses_to_run_with_its_reason(extra_impls):
    (extra_impls / "broken.py").write_text("raise RuntimeError('planted')\n")
    impls.registry(refresh=True)
    with pytest.raises(impls.ImplementationUnavailableError, match="planted"):
        impls.get("broken").attention(*make_qkv(3, 3, 2))


def test_wrong_output_shape_breaks_the_contract(extra_impls):
    source = impls.registry()["numpy"].source
    text = Path(source).read_text().replace('NAME = "numpy"', 'NAME = "bad_shape"')
    text = text.replace('return state["out"]', 'return state["out"][:, :-1]')
    (extra_impls / "bad_shape.py").write_text(text)
    impls.registry(refresh=True)
    with pytest.raises(impls.ImplementationError, match="shape"):
        impls.get("bad_shape").attention(*make_qkv(3, 3, 2))


def test_entry_point_implementations_are_registered(monkeypatch, tmp_path):
    (tmp_path / "plugin_impl.py").write_text(
        Path(impls.registry()["numpy"].source).read_text().replace('NAME = "numpy"', "")
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    class FakeEntryPoint:
        name, value = "from_plugin", "plugin_impl"

        def load(self):
            import plugin_impl

            return plugin_impl

    monkeypatch.setattr(
        impls._registry.importlib.metadata,
        "entry_points",
        lambda group: [FakeEntryPoint()] if group == impls.ENTRY_POINT_GROUP else [],
    )
    try:
        assert "from_plugin" in impls.registry(refresh=True)
        out = impls.get("from_plugin").attention(*make_qkv(5, 5, 3))
        assert out.shape == (5, 3)
    finally:
        monkeypatch.undo()
        impls.registry(refresh=True)


def test_a_duplicate_name_is_listed_unavailable_and_the_first_keeps_it(extra_impls):
    copy = extra_impls / "numpy.py"
    copy.write_text(Path(impls.registry()["numpy"].source).read_text())
    registry = impls.registry(refresh=True)
    assert registry["numpy"].available and registry["numpy"].source != str(copy)
    duplicate = registry[f"numpy ({copy})"]
    assert "name 'numpy' is already taken" in duplicate.unavailable_reason()


def test_new_writes_a_template_that_passes_the_conformance_checks(extra_impls):
    path = create_implementation("my_impl", directory=extra_impls)
    assert path.name == "my_impl.py"
    impl = impls.registry(refresh=True)["my_impl"]
    assert impl.available
    for causal in (False, True):
        for n_q, n_k in ((1, 1), (33, 17), (17, 33)):
            q, k, v = make_qkv(n_q, n_k, 5, 3, lead=(2,), dtype="float32", seed=n_q)
            args = impls.check_attention_args(q, k, v, causal=causal)
            assert checking.compare(impl.attention(q, k, v, causal=causal), args).ok
        grouped = make_qkv(3, 9, 4, lead=(2, 4), kv_heads=2, dtype="float32", seed=7)
        args = impls.check_attention_args(*grouped, causal=causal)
        assert checking.compare(impl.attention(*grouped, causal=causal), args).ok
    assert impl.attention(*make_qkv(4, 4, 2, dtype="float64")).dtype == np.float64


def test_new_refuses_bad_or_taken_names(tmp_path):
    for bad in ("Bad", "1x", "with-dash", "class", ""):
        with pytest.raises(ValueError, match="NAME: expected a lower-case Python identifier"):
            create_implementation(bad, directory=tmp_path)
    with pytest.raises(ValueError, match="already exists"):
        create_implementation("numpy", directory=tmp_path)


def test_new_command_writes_into_the_impls_directory(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("harness.cli.scaffold.impls_dir", lambda: tmp_path)
    assert main(["new", "fresh_impl"]) == 0
    assert (tmp_path / "fresh_impl.py").exists()
    assert main(["new", "fresh_impl"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_template_is_valid_python_with_the_surface():
    namespace = {}
    from harness.cli.scaffold import TEMPLATE

    exec(compile(TEMPLATE.format(name="x"), "template", "exec"), namespace)
    for attr in impls._registry.REQUIRED:
        assert attr in namespace


def test_optional_hooks_are_declared_by_the_registry_and_reached_through_it():
    numpy_impl = impls.get("numpy")
    assert numpy_impl.has_hook("release_workspace") and not numpy_impl.has_hook("transfer_s")
    with pytest.raises(ValueError, match="hook: expected one of variant, release_workspace"):
        numpy_impl.has_hook("fetch")  # a required function, not an optional hook
    call = numpy_impl.prepare(*make_qkv(8, 8, 4, dtype="float64"))
    call.run()
    assert not call.timed_on_device and not numpy_impl.simulated()
    assert call.transfer_s() is None and call.device_memory_bytes() is None
    assert call.variant() == ""  # numpy has one code path


def test_a_prepared_call_says_which_code_it_runs():
    kernel = impls.get("numba_parallel")
    rows, columns = kernel.module.tile("float32")
    tiled = kernel.prepare(*make_qkv(40, 40, 8, dtype="float32"))
    assert tiled.variant() == f"tiled {rows}x{columns}, {kernel.module.vector_bits()}-bit vectors"
    decode = kernel.prepare(*make_qkv(1, 600, 8, dtype="float32"))
    rows, keys, columns = kernel.module.decode_tile("float32")
    assert decode.variant() == (
        f"decode {rows}x{keys} scores, {rows}x{columns} values, "
        f"{kernel.module.vector_bits()}-bit vectors, 2 key ranges, "
        f"{'prefetch' if decode.state['ahead'] else 'no prefetch'}"
    )
