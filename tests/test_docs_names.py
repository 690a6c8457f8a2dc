"""The contributor guide and the architecture page name the code in backticks: files and
folders, modules, functions, classes, tables. Each such name must exist, so a rename or
a removal that leaves a page behind fails here.

A backticked span is checked when it is a path (``fastnn/training.py``, ``numba/jit.py``
under ``kernels/``, ``.ci/run``) or a dotted name, maybe called (``fastnn.plan.describe``,
``run(order)``, ``numba_ops.OVERRIDES``): names under ``fastnn.`` must import and
resolve; other names must each be a name the code defines or uses, or a string it holds
(an activation's name, say). Anything else (an expression, a command) is prose."""

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "docs" / "architecture.md", ROOT / "docs" / "contributing.md"]
CODE_FOLDERS = ("fastnn", "kernels", "bench", "tests")
PATH_BASES = ("", "kernels", "fastnn", "fastnn/backends", "fastnn/distributed", "docs",
              "tests")
PROJECT_FILES = ("pyproject.toml", "mkdocs.yml", ".ci/run")  # their words count as names
PATH = re.compile(r"\.?[\w-]+(?:/[\w.-]+)*/?|[\w-]+\.(?:py|md|toml|yml|sh)")
DOTTED = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?:\([^()]*\))?")


def spans(page):
    """Every inline code span of a Markdown page, outside fenced blocks, whitespace
    normalized (a span may wrap to the next line)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", text)]


def code_names():
    """Every name the Python code defines or uses, every string constant it holds, and
    the words of the project files."""
    names = set()
    for folder in CODE_FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            if ".venv" not in path.parts and path != Path(__file__).resolve():
                names.update(_names(ast.parse(path.read_text())))
    for name in PROJECT_FILES:
        names.update(re.findall(r"[\w.-]+", (ROOT / name).read_text()))
    return names


def _names(tree):
    """The names of one module; from its string constants (CUDA source, say) the whole
    string and each identifier in it, docstrings left out (prose, as these pages are)."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            yield node.id
        elif isinstance(node, (ast.Attribute, ast.arg, ast.keyword)):
            yield getattr(node, "attr", None) or getattr(node, "arg", None) or ""
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            yield node.name
        elif isinstance(node, ast.alias):
            yield from (node.asname or node.name).split(".")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in docstrings):
            yield node.value
            yield from re.findall(r"[A-Za-z_]\w*", node.value)


def resolves(dotted):
    """True if ``fastnn.a.b`` imports as a module or resolves as attributes of one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for part in parts[cut:]:
                target = getattr(target, part)
        except AttributeError:
            return False
        return True
    return False


def missing(span, names):
    """Why ``span`` names nothing in the code, or None (found, or not a name at all)."""
    if "/" in span or re.fullmatch(r"[\w-]+\.(?:py|md|toml|yml|sh)", span):
        if not PATH.fullmatch(span):
            return None
        if any((ROOT / base / span.rstrip("/")).exists() for base in PATH_BASES):
            return None
        return "no such file or folder"
    match = DOTTED.fullmatch(span)
    if match is None:
        return None
    dotted = match.group(1)
    if dotted == "fastnn" or dotted.startswith("fastnn."):
        return None if resolves(dotted) else "does not import or resolve"
    unknown = [part for part in dotted.split(".") if part not in names]
    return f"the code has no {', '.join(unknown)}" if unknown else None


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_every_name_the_page_cites_exists(page):
    names = code_names()
    problems = [f"`{span}`: {why}" for span in spans(page)
                if (why := missing(span, names)) is not None]
    assert not problems, f"{page.relative_to(ROOT)} cites:\n" + "\n".join(problems)


def test_the_check_catches_stale_names():
    names = code_names()
    assert missing("kernels/numba_activations.py", names) == "no such file or folder"
    assert missing("fastnn.steps.epoch_steps", names) == "does not import or resolve"
    assert missing("fastnn.training.epoch_runner(model, X, Y, batch)", names) is None
    assert missing("activation_kinds.kind_of", names) == (
        "the code has no activation_kinds, kind_of")
    assert missing("KINDS", names) == "the code has no KINDS"
    assert missing("run.finish()", names) is None and missing("numba/jit.py", names) is None
    assert missing('loss="auto"', names) is None  # an expression: prose
