"""Packaging and project hygiene: kernels ship as fastnn.kernels, the README's commands
are the ones CI runs, versions agree, and the code is ruff-clean."""

import importlib
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fastnn

ROOT = Path(__file__).resolve().parent.parent


def readme_commands():
    text = (ROOT / "README.md").read_text()
    block = re.match(r"# fastnn\n+(?:[^\n`]*\n+)?```(?:bash|sh)\n(.*?)```", text, re.S)
    assert block, "README.md must open with a fenced block of commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_exactly_two_commands():
    install_and_run, install_and_test = readme_commands()
    assert "pip install" in install_and_run and "python -m fastnn" in install_and_run
    assert "pip install" in install_and_test and "[test]" in install_and_test
    assert install_and_test.split("&&")[-1].split()[0] == "pytest"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci


def test_kernels_install_as_a_subpackage_only(tmp_path):
    """Away from the checkout (so only the installed package is visible), fastnn.kernels
    imports and no top-level module called ``kernels`` exists."""
    code = (
        "import importlib.util, fastnn.kernels as k; "
        "print(k.__name__, importlib.util.find_spec('kernels') is None, 'hot-path' in k.__doc__)"
    )
    run = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["fastnn.kernels", "True", "True"]
    top_level = importlib.metadata.distribution("fastnn").read_text("top_level.txt")
    assert top_level is None or top_level.split() == ["fastnn"]


def test_version_matches_pyproject():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', text, re.M).group(1) == fastnn.__version__
    assert importlib.metadata.version("fastnn") == fastnn.__version__


def test_the_main_job_runs_on_the_selected_backend():
    run = subprocess.run([sys.executable, "-m", "fastnn", "--iterations", "3000"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT / "tests")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("fastnn 0.") and "'numpy' backend" in lines[0]
    accuracy = float(re.search(r"test accuracy ([\d.]+)%", lines[2]).group(1))
    assert accuracy >= 93.0


def test_code_is_ruff_clean():
    if importlib.util.find_spec("ruff") is None:
        pytest.fail("ruff is not installed; pip install 'fastnn[test]'")
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def _ci_floors():
    """(OLDEST_NUMPY, OLDEST_NUMBA) as .ci/run computes them from pyproject.toml."""
    ci = (ROOT / ".ci" / "run").read_text()
    lines = re.search(r"^floor\(\).*?^OLDEST_NUMBA=.*?$", ci, re.M | re.S).group(0)
    run = subprocess.run(["bash", "-c", f'{lines}\necho "$OLDEST_NUMPY $OLDEST_NUMBA"'],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return tuple(run.stdout.split())


def test_the_numba_range_is_written_once_and_everything_reads_it(monkeypatch):
    """pyproject.toml's numba extra holds the range CI tests (the test extra includes it):
    .ci/run's oldest environment takes its floor (and numpy's, on Python 3.10), the
    backend's message names it from the installed metadata (or, in a raw checkout, from
    pyproject.toml itself), and the docs' tested-range table shows it; the upper end
    tested is the newest minor version below the cap."""
    from fastnn.backends import numba_backend

    project = (ROOT / "pyproject.toml").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    ranges = re.findall(r'"numba>=([\d.]+),<([\d.]+)"', project)
    assert len(ranges) == 1, ranges  # written once
    test_extra = project.split("\ntest = ")[1].split("]\n")[0]
    assert re.search(r'"fastnn\[([\w,]*,)?numba(,[\w,]*)?\]"', test_extra), test_extra
    ((floor, cap),) = ranges
    major, minor = cap.split(".")
    newest = f"{major}.{int(minor) - 1}"
    numpy_floor = re.search(r'"numpy>=([\d.]+)"', project).group(1)
    python_floor = re.search(r'requires-python = ">=([\d.]+)"', project).group(1)
    assert _ci_floors() == (f"{numpy_floor}.0", f"{floor}.0")
    assert f"for candidate in python{python_floor} " in ci
    numba_backend.tested_numba.cache_clear()
    assert numba_backend.tested_numba() == (floor, newest)  # the installed metadata's

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "requires", not_installed)
    # a raw checkout's pyproject (the one beside the package; this checkout's, as the
    # package under test may be an installed copy, with no pyproject.toml beside it)
    monkeypatch.setattr(numba_backend, "PYPROJECT", ROOT / "pyproject.toml")
    numba_backend.tested_numba.cache_clear()
    assert numba_backend.tested_numba() == (floor, newest)
    monkeypatch.setattr(numba_backend, "PYPROJECT", ROOT / "no-such-pyproject.toml")
    numba_backend.tested_numba.cache_clear()
    assert numba_backend.tested_numba() is None  # neither: the message names no numbers
    numba_backend.tested_numba.cache_clear()
    table = (ROOT / "docs" / "backends" / "numba.md").read_text()
    assert f"| range pinned | `numba>={floor},<{cap}` |" in table
    assert re.search(rf"^\| oldest tested \| {re.escape(floor)}\.0 \| Python "
                     rf"{re.escape(python_floor)}, numpy {re.escape(numpy_floor)}\.0 \|$",
                     table, re.M)
    assert re.search(rf"^\| newest tested \| {re.escape(newest)}\.\d+ \|", table, re.M)


def test_no_test_in_tests_imports_bench():
    """``pytest tests/test_x.py`` run alone puts tests/ on sys.path, not the project root
    (bench/'s conftest does that when the whole suite runs), so a test of a bench module
    lives in bench/, as bench/test_*.py do."""
    importing = [path.name for path in sorted((ROOT / "tests").glob("*.py"))
                 if re.search(r"^\s*(from|import)\s+bench\b", path.read_text(), re.M)]
    assert importing == []
