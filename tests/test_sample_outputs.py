"""Every sample output in the README and docs/ is what its commands print now: each
``$ COMMAND`` block runs here and is compared line for line (tests/sample_outputs.py
has the rules and the marks; docs/contributing.md tells authors how to use them).
Blocks that show the same commands share one run; blocks marked ``not run`` or
``illustration`` are listed as skipped, with their reasons."""

import re
import textwrap

import pytest
import sample_outputs as samples


def all_blocks():
    """(blocks, problems): every page's sample blocks, and what is wrong with a page
    whose blocks cannot be read (its blocks then run nowhere, and the inventory fails)."""
    found, problems = [], []
    for page in samples.PAGES:
        try:
            found += samples.blocks(page)
        except ValueError as error:
            problems.append(str(error))
    return found, problems


def grouped():
    """pytest params: one per distinct run (its commands and whether host-dependent),
    holding every block that shows it; one skipped param per marked block."""
    runs, skipped = {}, []
    for block in all_blocks()[0]:
        if block.skip_reason:
            skipped.append(pytest.param([block], id=block.where,
                                        marks=pytest.mark.skip(reason=block.skip_reason)))
            continue
        key = (tuple(command for command, _ in block.runs), "host-dependent" in block.marks,
               tuple(sorted(block.files.items())))
        runs.setdefault(key, []).append(block)
    return [pytest.param(shown, id=" ".join(b.where for b in shown))
            for shown in runs.values()] + skipped


def test_every_sample_block_is_runnable_or_marked():
    """Parsing finds each page's blocks; a malformed one (no '$ ' line and no mark, an
    unknown mark, a shortened command that does not resolve) fails here by name."""
    found, problems = all_blocks()
    assert not problems, "\n".join(problems)
    checked = [b for b in found if not b.skip_reason]
    assert len(checked) >= 5 and all(b.runs for b in checked)
    assert {b.page.name for b in checked} >= {"README.md", "index.md", "cli.md"}


@pytest.mark.parametrize("shown", grouped())
def test_sample_output_is_what_the_commands_print(shown, tmp_path):
    first = shown[0]
    host_dependent = "host-dependent" in first.marks
    settings, loose = samples.settings_for(host_dependent)
    commands = [command for command, _ in first.runs]
    results = samples.run(commands, settings, tmp_path, first.files)
    where = "with " + " ".join(f"{k}={v!r}" for k, v in settings.items()) if settings else ""
    for block in shown:
        expected_status = block.marks.get("exit", 0)
        for (command, expected), (status, output) in zip(block.runs, results):
            assert status == expected_status, \
                f"{block.where}: '$ {command}' exited {status}, not {expected_status} " \
                f"{where}:\n{output}"
            problem = samples.mismatch(expected, output, loose)
            assert problem is None, (
                f"{block.where}: '$ {command}' {where} printed something else than the "
                f"block shows:\n{problem}\nIf the change is intended, put the new output "
                f"in the block (see docs/contributing.md, 'Sample output').")


# --- the rules themselves -------------------------------------------------------------------


def test_ellipses_durations_and_exact_text():
    expected = ["start 1.5 in 0.7 s", "...", "Adam(...) done"]
    assert samples.mismatch(expected, "start 1.5 in 12.25 s\na\nb\nAdam(lr=1) done\n") is None
    assert samples.mismatch(expected, "start 1.5 in 3 ms\nAdam() done\n") is None
    assert "+start 1.6 in 0.7 s" in samples.mismatch(expected, "start 1.6 in 0.7 s\nAdam() done\n")
    assert samples.mismatch(expected, "start 1.5 in 0.7 s\nAdam() done\nmore\n") is not None
    assert samples.mismatch(["in 0.7 s"], "in 0.7 kg\n") is not None


def test_loose_comparison_where_the_reference_cannot_be_set_up():
    expected = ["test accuracy 96.0% (loss 0.1596) in 0.9 s"]
    assert samples.mismatch(expected, "test accuracy 95.0% (loss 0.1590) in 2 s\n",
                            loose=True) is None
    problem = samples.mismatch(expected, "test accuracy 40.0% (loss 0.1590) in 2 s\n", loose=True)
    assert problem == "40 is not within 50% of the documented 96"
    assert samples.mismatch(expected, "train accuracy 96.0% (loss 0.1596) in 2 s\n",
                            loose=True) is not None


def page(tmp_path, text):
    path = tmp_path / "page.md"
    path.write_text(textwrap.dedent(text))
    return path


def test_marks_and_shortened_commands(tmp_path):
    (block,) = samples.blocks(page(tmp_path, """\
        ```bash
        fastnn train --dataset xor --epochs 3 \\
            --out run   # a comment
        ```

        <!-- output: host-dependent -->
        <!-- output: exit 2 -->
        ```text
        $ fastnn train --dataset xor ... --out run
        one

        $ echo hi
        hi
        ```
        """))
    assert block.marks == {"host-dependent": "", "exit": 2} and block.skip_reason is None
    assert block.runs == [("fastnn train --dataset xor --epochs 3 --out run", ["one"]),
                          ("echo hi", ["hi"])]


@pytest.mark.parametrize("text, problem", [
    ("```text\nsome output\n```\n", "a sample block starts with '$ COMMAND'"),
    ("```\n$ echo\n```\n", None),  # no language: a sample block too
    ("<!-- output: flaky -->\n```text\n$ echo\n```\n", "unknown mark 'flaky'"),
    ("<!-- output: not run -->\n```text\n$ echo\n```\n", "unknown mark 'not run'"),
    ("```text\n$ fastnn ... run\n```\n", "matches 0 commands"),
    ("```bash\nfastnn a run\nfastnn b run\n```\n```text\n$ fastnn ... run\n```\n",
     "matches 2 commands"),
    ("```text\n$ echo\n", "the fence is never closed"),
])
def test_malformed_blocks_are_named(tmp_path, text, problem):
    path = page(tmp_path, text)
    if problem is None:
        assert [b.runs for b in samples.blocks(path)] == [[("echo", [])]]
        return
    with pytest.raises(ValueError, match=r"page\.md:\d+: .*" + re.escape(problem)):
        samples.blocks(path)


def test_file_blocks_are_written_where_the_page_commands_run(tmp_path):
    path = page(tmp_path, """\
        <!-- file: hello.py -->
        ```python
        print("hello from", __file__.split("/")[-1])
        ```

        ```text
        $ python hello.py
        hello from hello.py
        ```
        """)
    (block,) = samples.blocks(path)
    assert block.files == {"hello.py": 'print("hello from", __file__.split("/")[-1])\n'}
    folder = tmp_path / "run"
    folder.mkdir()
    [(status, output)] = samples.run([block.runs[0][0]], {}, folder, block.files)
    assert status == 0 and samples.mismatch(block.runs[0][1], output) is None
    with pytest.raises(ValueError, match="a second file 'hello.py'"):
        samples.blocks(page(tmp_path, path.read_text() + path.read_text()))


def test_marked_blocks_are_listed_with_their_reason(tmp_path):
    (block,) = samples.blocks(page(tmp_path, """\
        <!-- output: not run: needs a GPU -->
        ```text
        $ FASTNN_BACKEND=cupy python -m fastnn
        ```
        """))
    assert block.skip_reason.endswith("page.md:2: not run: needs a GPU") and block.runs == []


GEMM = ("python -c \"import hashlib, numpy as np; r = np.random.default_rng(0); "
        "a = r.random((64, 300), dtype=np.float32); "
        "print(hashlib.sha256(a @ a.T.copy()).hexdigest())\"")


def test_host_dependent_blocks_run_on_the_reference_kernels_and_others_on_other_ones(tmp_path):
    """The settings reach OpenBLAS: a float32 GEMM rounds differently under the two."""
    reference, loose = samples.settings_for(host_dependent=True)
    if loose:
        pytest.skip("this host cannot set up the reference kernels (x86-64 with AVX2 and "
                    "NumPy on OpenBLAS): host-dependent blocks are compared loosely here")
    other, loose = samples.settings_for(host_dependent=False)
    assert reference["OPENBLAS_CORETYPE"] == "Haswell" and other == samples.OTHER_KERNELS
    [(status, digest)] = samples.run([GEMM], reference, tmp_path)
    [(_, other_digest)] = samples.run([GEMM], other, tmp_path)
    assert status == 0 and len(digest) == 65 and digest != other_digest
