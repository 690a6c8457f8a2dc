"""The README and the docs site: every relative link resolves, the site builds with
``mkdocs build --strict``, the README's copies of docs content match their originals,
and the README's examples run."""

import ast
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import sample_outputs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)  # fenced blocks and inline code
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(path):
    """The ids mkdocs (and GitHub) give the headings of a Markdown file."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    ids = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, re.M):
        slug = re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower()
        ids.add(re.sub(r"[-\s]+", "-", slug))
    return ids


def relative_links(path):
    """(target file, fragment or '') of every relative link outside code."""
    for target in LINK.findall(CODE.sub("", path.read_text())):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, fragment = target.partition("#")
        yield (path.parent / file).resolve() if file else path, fragment


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for target, fragment in relative_links(page):
            where = f"{page.relative_to(ROOT)} -> {target.relative_to(ROOT)}"
            if not target.exists():
                broken.append(f"{where}: no such file")
            elif fragment and fragment not in anchors(target):
                broken.append(f"{where}#{fragment}: no such heading")
    assert not broken, "\n".join(broken)


def test_readme_links_into_the_docs_site():
    linked = {target for target, _ in relative_links(ROOT / "README.md")}
    assert {DOCS / "index.md", DOCS / "benchmarks.md", DOCS / "architecture.md",
            DOCS / "contributing.md"} <= linked


def test_the_docs_site_builds_strictly(tmp_path):
    """Broken links or anchors, and pages missing from the nav, fail the build."""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.fail("mkdocs is not installed; pip install -e '.[test]' (or '.[docs]')")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                          "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "site" / "architecture" / "index.html").exists()


def table(text, header):
    """The rows of the Markdown table that starts with ``header``, link targets blanked
    (the README and the docs link to the same pages by different paths)."""
    lines = text.splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(re.sub(r"\]\([^)]*\)", "]()", line))
    return rows


@pytest.mark.parametrize("header, page", [
    ("| area | contents |", "guide/training.md"),
    ("| workload | numpy | numba | torch-cpu | note |", "benchmarks.md"),
])
def test_readme_tables_match_the_docs(header, page):
    readme = (ROOT / "README.md").read_text()
    assert table(readme, header) == table((DOCS / page).read_text(), header)


def python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def test_readme_quick_start_is_the_training_guide_example():
    assert python_blocks(ROOT / "README.md")[0] == python_blocks(DOCS / "guide/training.md")[0]


def test_readme_quick_start_runs(tmp_path, monkeypatch, capsys):
    """The README's Python example as written: the planar net reaches the course's ~90%
    and prints what its comment says, and the gradient check at its end passes (it
    asserts)."""
    monkeypatch.chdir(tmp_path)
    example = python_blocks(ROOT / "README.md")[0]
    exec(compile(example, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert ast.literal_eval(printed[0])["accuracy"] >= 0.90
    comment = re.search(r"^print\(model\.evaluate\(X, y\)\) +# (.*)$", example, re.M).group(1)
    assert sample_outputs.mismatch([comment], printed[0]) is None, (comment, printed[0])
    assert sum(line.startswith("epoch ") for line in printed) == 10  # verbose=10 of 100


def test_readme_shell_commands_are_the_tested_ones():
    """Each ``fastnn ...`` line of the README is one of docs/guide/cli.md's, which
    tests/test_cli.py runs word for word."""
    def commands(path):
        blocks = re.findall(r"```bash\n(.*?)```", path.read_text(), re.S)
        return [shlex.split(line) for block in blocks for line in block.splitlines()
                if line.startswith("fastnn ")]

    readme = commands(ROOT / "README.md")
    assert readme and all(c in commands(DOCS / "guide/cli.md") for c in readme)
