"""The HTML report opens in a real browser (headless Chromium) with every image loaded, offline.

Chromium comes from Debian's `chromium` package, which scripts/test_setup.sh installs (scripts/test.sh
runs it; the main job does not); without it these tests fail (never skip): the report is only known
to render once a browser has rendered it.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from _gate_helpers import world_inputs

torch.set_num_threads(1)

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]  # containers often have a tiny /dev/shm


def chromium() -> str:
    path = Path("/usr/bin/chromium")
    found = str(path) if path.is_file() else shutil.which("chromium")
    if found is None:
        pytest.fail("headless Chromium is missing: run `bash scripts/test_setup.sh` as root (it installs Debian's chromium "
                    "package with apt-get), or `apt-get install chromium`")
    return found


def browse(page: Path, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *flags, page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)


def image_check(page: Path, tmp_path: Path) -> tuple[int, int, str]:
    """(images on the page, images that failed to decode, the DOM) after the load event."""
    done = browse(page, tmp_path, "--virtual-time-budget=5000", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    mark = re.search(r'id="image-check"[^>]*data-images="(\d+)"[^>]*data-broken="(\d+)"', done.stdout)
    assert mark, f"the page's load-time image check did not run; DOM starts {done.stdout[:500]!r}"
    return int(mark.group(1)), int(mark.group(2)), done.stdout


@pytest.fixture(scope="module")
def gate_report(tmp_path_factory):
    """A real gate over two ESD-LoRA checkpoints of the small world (cheap probe knobs)."""
    from unlearn_guard.config import ProbeConfig
    from unlearn_guard.gate.checkpoints import discover_checkpoints
    from unlearn_guard.gate.decision import Thresholds
    from unlearn_guard.gate.knobs import apply_settings
    from unlearn_guard.gate.runner import GateConfig, run_gate

    root = world_inputs(tmp_path_factory.mktemp("world"), images=3, save_at=(2, 4), ddim_steps=5)
    probe = apply_settings(ProbeConfig.from_preset("fast"), ["inversion.num_steps=3", "bootstrap_samples=50"])
    config = GateConfig(model="shapes-world", checkpoints=tuple(discover_checkpoints(root / "checkpoints")),
                        concept_images=root / "concept", reference_images=root / "reference",
                        thresholds=Thresholds(min_d_n=1.02), probe=probe, output=root / "out", thumbnails=3,
                        progress=False)
    report = run_gate(config, echo=lambda line: None)
    return root / "out", report


def test_report_opens_in_chromium_with_every_image_loaded(gate_report, tmp_path):
    out, report = gate_report
    page = out / "report.html"
    html = page.read_text()
    assert "http://" not in html and "https://" not in html  # nothing to fetch: opens offline
    # 1 d_N-by-step plot + per checkpoint (NLL histogram, PSNR plot, 3 query/reconstruction pairs)
    expected = 1 + len(report["checkpoints"]) * (2 + 2 * 3)
    images, broken, dom = image_check(page, tmp_path)
    assert (images, broken) == (expected, 0)
    verdict = "pass" if report["passed"] else "fail"
    assert f'data-verdict="{verdict}"' in dom
    assert dom.index('id="verdict"') < dom.index("<h2>Checkpoints</h2>")  # the verdict comes first
    for record in report["checkpoints"]:
        assert f"{record['d_n']:.3f}" in dom


def test_a_broken_image_is_detected(gate_report, tmp_path):
    """Negative control: the image check fails when an embedded image does not decode."""
    out, _ = gate_report
    html = (out / "report.html").read_text()
    first = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]{40})', html)
    broken_page = tmp_path / "broken.html"
    broken_page.write_text(html.replace(first.group(1), "A" * 40, 1))
    images, broken, _ = image_check(broken_page, tmp_path)
    assert broken == 1 and images > 1


def test_screenshot_renders(gate_report, tmp_path):
    out, _ = gate_report
    shot = tmp_path / "report.png"
    done = browse(out / "report.html", tmp_path, "--window-size=1000,1400", f"--screenshot={shot}")
    assert done.returncode == 0 and shot.is_file()
    from PIL import Image

    with Image.open(shot) as picture:
        assert picture.size == (1000, 1400)
        colours = picture.convert("RGB").resize((50, 70)).getcolors(maxcolors=5000)
        assert colours is not None and len(colours) > 20  # not a blank page


def test_without_matplotlib_the_report_has_tables_and_says_how_to_get_plots(gate_report, tmp_path, monkeypatch):
    from unlearn_guard.report import plots
    from unlearn_guard.report.html import render_report

    _, report = gate_report
    monkeypatch.setattr(plots, "_matplotlib", lambda: None)
    page = tmp_path / "tables.html"
    page.write_text(render_report(report))
    html = page.read_text()
    assert "pip install unlearn_guard[report]" in html and 'id="no-plots"' in html
    assert "NLL mean" in html and "PSNR (dB)" in html
    images, broken, _ = image_check(page, tmp_path)
    assert (images, broken) == (len(report["checkpoints"]) * 2 * 3, 0)  # thumbnails only, no plots


def test_all_text_is_escaped(gate_report, tmp_path):
    from unlearn_guard.report.html import render_report

    _, report = gate_report
    hostile = copy.deepcopy(report)
    payload = '<script>document.title="pwned"</script>'
    hostile["checkpoints"][0]["name"] = payload
    hostile["checkpoints"][0]["probe"]["erased"]["images"][0]["prompt"] = payload
    hostile["inputs"]["concept_images"]["images"][0]["name"] = payload
    hostile["reasons"] = [payload]
    html = render_report(hostile)
    assert payload not in html and "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;" in html
    page = tmp_path / "hostile.html"
    page.write_text(html)
    _, broken, dom = image_check(page, tmp_path)
    assert broken == 0 and "<title>unlearn_guard release gate</title>" in dom


def test_report_rerendered_from_gate_json_is_the_same_page(gate_report):
    from unlearn_guard.report.html import render_report
    from unlearn_guard.report.loading import load_report

    out, _ = gate_report
    assert render_report(load_report(out / "gate.json")) == (out / "report.html").read_text()
    assert json.loads((out / "gate.json").read_text())["kind"] == "unlearn_guard.gate"
