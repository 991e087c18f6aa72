"""The examples of README.md and docs/*.md run as written and print what the pages show.

Every ```python block is an example and runs, unless the line before its fence is
`<!-- not run: why -->` (needs weights from a hub, a GPU, a launcher, minutes of CPU). A ```bash
block must carry that mark: shell examples are shown, not run. A bare ``` block right after an
example is what the example prints, and the test compares it line by line.

All examples run in one subprocess (one import of torch and diffusers for all of them), one after
the other, each in its own empty folder with fresh globals, on one CPU thread: on a busy 2-core
machine a second OpenMP thread made the ESD example 10x slower (502 s against 52 s, measured beside
other jobs). Run as a script, this file is that subprocess.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
import traceback
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# Pages written by topic, each opening with a runnable example (docs/layout.md is a file map).
TOPIC_EXEMPT = {"layout.md"}
NOT_RUN = "<!-- not run:"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", flags=re.S | re.M)
NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?")


class Block(NamedTuple):
    page: str
    line: int
    lang: str
    code: str
    marked: bool  # `<!-- not run: ... -->` on the line before the fence
    printed: str | None  # the bare ``` block right after it, if any


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def blocks_of(path: Path) -> list[Block]:
    text = path.read_text()
    found = list(FENCE.finditer(text))
    blocks = []
    for i, match in enumerate(found):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        after = found[i + 1] if i + 1 < len(found) else None
        printed = after.group(2) if after and after.group(1) == "" and after.start() == match.end() else None
        blocks.append(Block(str(path.relative_to(ROOT)), text.count("\n", 0, match.start()) + 1, match.group(1),
                            match.group(2), before.startswith(NOT_RUN), printed))
    return blocks


def examples() -> list[Block]:
    return [b for p in pages() for b in blocks_of(p) if b.lang == "python" and not b.marked]


def run_examples(folder: Path) -> None:
    """The subprocess: run each example in folder/<i>/; stdout.txt, stderr.txt and ok hold its outcome."""
    codes = json.loads((folder / "examples.json").read_text())
    for i, code in enumerate(codes):
        place = folder / str(i)
        place.mkdir()
        (place / "example.py").write_text(code)
        os.chdir(place)
        saved = [os.dup(1), os.dup(2)]
        with open(place / "stdout.txt", "w") as out, open(place / "stderr.txt", "w") as err:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            try:
                runpy.run_path(str(place / "example.py"), run_name="__main__")
                ok = True
            except BaseException:  # noqa: BLE001 - an example's failure (SystemExit included) is its result
                traceback.print_exc()
                ok = False
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        (place / "ok").write_text(str(ok))


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> dict[tuple[str, int], tuple[bool, str, Path]]:
    """Run every example once; (page, line) -> (succeeded, stdout, its folder)."""
    folder = tmp_path_factory.mktemp("examples")
    found = examples()
    (folder / "examples.json").write_text(json.dumps([b.code for b in found]))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, __file__, str(folder)], capture_output=True, text=True, timeout=900,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {}
    for i, block in enumerate(found):
        place = folder / str(i)
        ok = (place / "ok").read_text() == "True" if (place / "ok").exists() else False
        stdout = (place / "stdout.txt").read_text() if (place / "stdout.txt").exists() else ""
        results[(block.page, block.line)] = (ok, stdout, place)
    return results


def result_of(ran, block: Block) -> tuple[str, Path]:
    ok, stdout, place = ran[(block.page, block.line)]
    assert ok, f"{block.page}:{block.line}: the example failed:\n" + (place / "stderr.txt").read_text()[-3000:]
    return stdout, place


def matches_printed(got: str, expected: str) -> bool:
    """Same lines with the same words; numbers equal to within 0.01 (CPU kernels may round the last digit)."""
    got_lines, want_lines = got.strip().splitlines(), expected.strip().splitlines()
    if len(got_lines) != len(want_lines):
        return False
    for line, want in zip(got_lines, want_lines):
        if NUMBER.sub("#", line) != NUMBER.sub("#", want):
            return False
        numbers = [float(v.replace(",", "")) for v in NUMBER.findall(line)]
        if numbers != pytest.approx([float(v.replace(",", "")) for v in NUMBER.findall(want)], abs=0.01):
            return False
    return True


@pytest.mark.parametrize("block", examples(), ids=lambda b: f"{b.page}:{b.line}")
def test_example_runs_and_prints_what_the_page_shows(ran, block):
    stdout, _ = result_of(ran, block)
    if block.printed is not None:
        assert matches_printed(stdout, block.printed), f"{block.page}:{block.line} printed\n{stdout}\nthe page shows\n{block.printed}"


def test_shell_blocks_say_why_they_are_not_run():
    unmarked = [f"{b.page}:{b.line}" for p in pages() for b in blocks_of(p) if b.lang in ("bash", "sh") and not b.marked]
    assert not unmarked, f"mark these `{NOT_RUN} why -->` or make them python examples: {unmarked}"


def test_every_topic_page_opens_with_a_runnable_example():
    for path in sorted(DOCS.glob("*.md")):
        if path.name in TOPIC_EXEMPT:
            continue
        first = blocks_of(path)[0]
        assert first.lang == "python" and not first.marked, f"{path.name}: the first block must be a runnable example"


def test_readme_is_short_and_links_every_docs_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    for path in sorted(DOCS.glob("*.md")):
        assert f"(docs/{path.name})" in text, f"README.md does not link docs/{path.name}"


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = FENCE.sub("", path.read_text())
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.*)$", text, re.M)}


def test_relative_links_resolve():
    for path in pages():
        for target, anchor in re.findall(r"\]\((?!https?://)([^)#\s]*)(?:#([^)\s]+))?\)", path.read_text()):
            linked = (path.parent / target).resolve() if target else path
            where = f"{path.relative_to(ROOT)} links to {target}#{anchor}"
            assert linked.exists(), f"{where}: no such file"
            if anchor and linked.suffix == ".md" and linked.exists():
                assert anchor in anchors(linked), f"{where}: no such heading"


def test_readme_api_example_runs(ran):
    # The API example: the block that builds the tiny model, probes and writes probe.json.
    found = [b for b in examples() if "build_tiny_components" in b.code and 'to_json("probe.json")' in b.code]
    assert len(found) == 1, "the docs must keep exactly one runnable tiny-model API example"
    stdout, place = result_of(ran, found[0])
    assert "d_N (mofc)" in stdout
    written = json.loads((place / "probe.json").read_text())
    assert written["memory_distance"]["n_erased"] == 4 and written["config"]["preset"] == "fast"


def test_readme_callback_example_runs_as_printed_and_stops_early(ran):
    """The probe-callback example: ESD on the shipped world model, stopped by the monitor; its
    printed output is the block that follows it (M and d_N to within 0.01: CPU kernels may round
    the last digit differently)."""
    found = [b for b in examples() if "esd_lora_erase" in b.code and "monitor.step(i + 1)" in b.code and b.printed]
    assert len(found) == 1, "the docs must keep exactly one runnable ESD + monitor example"
    stdout, _ = result_of(ran, found[0])
    got, expected = stdout.strip().splitlines(), found[0].printed.strip().splitlines()
    assert got[0] == expected[0] and got[0].startswith("ran ") and " of 200 iterations; stopped by patience" in got[0]
    assert int(got[0].split()[1]) < 200  # it stopped early
    pattern = re.compile(r"step (\d+): M = ([\d.]+) \[([\d.]+), ([\d.]+)\], d_N = ([\d.]+)")
    got_rows = [pattern.fullmatch(line).groups() for line in got[1:]]
    expected_rows = [pattern.fullmatch(line).groups() for line in expected[1:]]
    assert [row[0] for row in got_rows] == [row[0] for row in expected_rows]
    for row, want in zip(got_rows, expected_rows):
        assert [float(v) for v in row[1:]] == pytest.approx([float(v) for v in want[1:]], abs=0.01)


if __name__ == "__main__":
    run_examples(Path(sys.argv[1]))
