"""Sample outputs in the README and docs/: find them, run their commands, compare.

A fenced ``text`` block whose first line starts with ``$ `` shows what commands print:
each ``$ COMMAND`` line is followed by that command's output (stdout and stderr
together). The commands of a block run one after another with bash in a fresh folder,
with this Python's bin folder first on PATH and FASTNN_BACKEND unset. The output must
match the block line for line, except that

- a line ``...`` stands for any number of lines, and ``...`` inside a line for any text;
- a command shortened with ``...`` is the one full command of the page's ``bash``
  blocks that it matches (so the block can show it short);
- a duration (``0.7 s``, ``12 ms``) matches any duration.

HTML comments right above the fence (invisible on the rendered page) mark a block:

- ``<!-- output: host-dependent -->``: the numbers depend on the CPU's float32 kernels
  (OpenBLAS's GEMM, NumPy's and Numba's SIMD code). The block shows what the reference
  configuration prints, AVX2 kernels (``REFERENCE`` below; an AVX2 machine's default,
  such as the AMD EPYC the docs are written on), and is run under it, so it must match
  exactly on any x86-64 machine with AVX2. Where the reference cannot be set up (another
  CPU or BLAS), its numbers are compared within ``FALLBACK_RTOL``. Blocks not marked
  run with other kernels (``OTHER_KERNELS``), which proves they do not depend on them.
- ``<!-- output: exit N -->``: every command of the block exits with status N (default 0).
- ``<!-- output: not run: REASON -->``: a real output the tests cannot produce (it needs
  a GPU, MNIST files, ...); listed as skipped with the reason.
- ``<!-- output: illustration: REASON -->``: not a command's output (a file, a layout);
  listed as skipped with the reason.

Blocks without a language, or ``console``, are held to the same rules as ``text``.

A fenced block of any language right below ``<!-- file: NAME -->`` is a file the page's
commands use (a script shown in full, say): it is written as NAME into the folder of
every block of that page before its commands run, so ``$ python NAME`` runs exactly
the code the page shows.
"""

import difflib
import math
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SAMPLE_LANGUAGES = ("text", "console", "")
FENCE = re.compile(r"^(\s*)```\s*(\S*)\s*$")
MARK = re.compile(r"^\s*<!--\s*output:\s*(.*?)\s*-->\s*$")
FILE_MARK = re.compile(r"^\s*<!--\s*file:\s*([\w.-]+)\s*-->\s*$")
DURATION = re.compile(r"\d+(?:\.\d+)? (?:s|ms|us)\b")
NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?")
FALLBACK_RTOL = 0.5
OTHER_KERNELS = {"OPENBLAS_CORETYPE": "Nehalem"}  # SSE only: other roundings
RUN_TIMEOUT_S = 300


@dataclass
class Block:
    """One fenced sample block: where it is, its marks, and its (command, lines) runs."""

    page: Path
    line: int  # of the opening fence, 1-based
    body: list
    marks: dict = field(default_factory=dict)
    runs: list = field(default_factory=list)
    files: dict = field(default_factory=dict)  # name -> text, the page's file blocks

    @property
    def where(self):
        return f"{_shown(self.page)}:{self.line}"

    @property
    def skip_reason(self):
        for key in ("not run", "illustration"):
            if key in self.marks:
                return f"{self.where}: {key}: {self.marks[key]}"
        return None


def _shown(page):
    return page.relative_to(ROOT) if page.is_relative_to(ROOT) else page


def blocks(page):
    """Every sample block of a Markdown page, with its marks parsed and its commands
    resolved; raises ValueError naming the block for a malformed one."""
    lines = page.read_text().splitlines()
    found, files, i = [], {}, 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent, language = fence.groups()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise ValueError(f"{_shown(page)}:{i + 1}: the fence is never closed")
        named = FILE_MARK.match(lines[i - 1]) if i > 0 else None
        if named:
            if named.group(1) in files:
                raise ValueError(f"{_shown(page)}:{i + 1}: a second file {named.group(1)!r}")
            files[named.group(1)] = "".join(line[len(indent):] + "\n"
                                            for line in lines[i + 1:end])
        elif language in SAMPLE_LANGUAGES:
            marks, k = [], i - 1
            while k >= 0 and MARK.match(lines[k]):
                marks.insert(0, MARK.match(lines[k]).group(1))
                k -= 1
            body = [line[len(indent):].rstrip() for line in lines[i + 1:end]]
            found.append(Block(page, i + 1, body, files=files))
            _parse(found[-1], marks, bash_commands(page))
        i = end + 1
    return found


def _parse(block, marks, commands):
    for text in marks:
        key, _, value = (part.strip() for part in text.partition(":"))
        exit_status = re.fullmatch(r"exit (\d+)", key)
        if exit_status:
            block.marks["exit"] = int(exit_status.group(1))
        elif key == "host-dependent":
            block.marks[key] = value
        elif key in ("not run", "illustration") and value:
            block.marks[key] = value
        else:
            raise ValueError(f"{block.where}: unknown mark {text!r}; the marks are "
                             f"host-dependent, exit N, 'not run: REASON' and "
                             f"'illustration: REASON'")
    if block.skip_reason:
        return
    if not block.body or not block.body[0].startswith("$ "):
        raise ValueError(f"{block.where}: a sample block starts with '$ COMMAND'; mark one "
                         f"that is no command's output '<!-- output: illustration: WHY -->'")
    for line in block.body:
        if line.startswith("$ "):
            block.runs.append((resolve(line[2:].strip(), commands, block.where), []))
        else:
            block.runs[-1][1].append(line)
    for _, expected in block.runs:
        while expected and not expected[-1]:
            expected.pop()  # blank lines between two commands' outputs


def bash_commands(page):
    """The commands of a page's ``bash`` blocks, continuation lines joined and trailing
    comments dropped."""
    text = "\n".join(re.findall(r"^\s*```bash\n(.*?)^\s*```", page.read_text(), re.S | re.M))
    text = re.sub(r"\\\n\s*", "", text)
    return [re.sub(r"\s+#\s.*$", "", line).strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def resolve(command, commands, where):
    """A command shortened with ``...``: the one command of ``commands`` it matches."""
    if "..." not in command:
        return command
    pattern = ".*".join(re.escape(part) for part in command.split("..."))
    found = [c for c in commands if re.fullmatch(pattern, c)]
    if len(found) != 1:
        raise ValueError(f"{where}: '$ {command}' matches {len(found)} commands of the page's "
                         f"bash blocks, not one: {found}")
    return found[0]


# ---- running ----


def cpu_flags():
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = re.search(r"^flags\s*:(.*)$", text, re.M)
    return set(line.group(1).split()) if line else set()


def reference_settings():
    """The environment that gives the reference float32 kernels (AVX2, as on an AVX2
    machine by default), or None where this host cannot set it up: OpenBLAS's Haswell
    kernels, NumPy's SIMD code without AVX-512, Numba's code for a Haswell CPU, and the
    2 Numba threads of the docs' host."""
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    flags = cpu_flags()
    if platform.machine() != "x86_64" or not {"avx2", "fma"} <= flags \
            or "openblas" not in blas.lower():
        return None
    settings = {"OPENBLAS_CORETYPE": "Haswell", "NUMBA_NUM_THREADS": "2"}
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    wide = [f for f in __cpu_dispatch__ if ("AVX512" in f or f == "X86_V4")
            and __cpu_features__.get(f)]
    if wide:
        settings["NPY_DISABLE_CPU_FEATURES"] = " ".join(wide)
    if "avx512f" in flags:
        settings["NUMBA_CPU_NAME"] = "haswell"
    return settings


def settings_for(host_dependent):
    """(environment variables, loose) for a block: loose means compare numbers within
    FALLBACK_RTOL, for host-dependent blocks where the reference cannot be set up."""
    reference = reference_settings()
    if not host_dependent:
        return ({} if reference is None else OTHER_KERNELS), False
    return (reference or {}), reference is None


def run(commands, settings, folder, files=None):
    """[(status, output)] of each command, run in order in ``folder``, after writing
    ``files`` (name -> text) there."""
    for name, text in (files or {}).items():
        (Path(folder) / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "FASTNN_BACKEND"}
    env.update(settings)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    results = []
    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=folder, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=RUN_TIMEOUT_S)
        results.append((done.returncode, done.stdout))
    return results


# ---- comparing ----


def _literal(text, loose):
    if not loose:
        return re.escape(text)
    pieces, pos = [], 0
    for number in NUMBER.finditer(text):
        pieces += [re.escape(text[pos:number.start()]), f"({NUMBER.pattern})"]
        pos = number.end()
    return "".join(pieces) + re.escape(text[pos:])


def _line_pattern(line, loose):
    chunks = []
    for chunk in line.split("..."):
        pieces, pos = [], 0
        for duration in DURATION.finditer(chunk):
            pieces += [_literal(chunk[pos:duration.start()], loose), DURATION.pattern]
            pos = duration.end()
        chunks.append("".join(pieces) + _literal(chunk[pos:], loose))
    return ".*?".join(chunks)


def mismatch(expected, output, loose=False):
    """None if ``output`` matches the block's ``expected`` lines, else what differs."""
    output = "".join(line.rstrip() + "\n" for line in output.splitlines())
    pattern = "".join(r"(?:[^\n]*\n)*?" if line.strip() == "..." else
                      _line_pattern(line, loose) + r"\n" for line in expected)
    found = re.fullmatch(pattern, output)
    if found and loose:
        documented = [float(n) for line in expected if line.strip() != "..."
                      for n in NUMBER.findall(DURATION.sub("", line.replace("...", " ")))]
        for doc, got in zip(documented, map(float, found.groups())):
            if not math.isclose(doc, got, rel_tol=FALLBACK_RTOL):
                return f"{got:g} is not within {FALLBACK_RTOL:.0%} of the documented {doc:g}"
    if found:
        return None
    diff = difflib.unified_diff(expected, output.splitlines(), "documented", "printed",
                                lineterm="", n=1)
    return "\n".join(diff)
