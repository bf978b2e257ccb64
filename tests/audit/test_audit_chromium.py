"""What a reader sees: the HTML report and the served page, loaded in headless Chromium.

Chromium is required, never skipped: scripts/test.sh installs Debian's package when it is
missing, and without it these tests fail.
"""

from __future__ import annotations

import sqlite3
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from audit_ledger import Ledger, attach_audit
from matplotlib import image

from fedseal.audit.render import render_html
from fedseal.audit.report_data import build_report
from fedseal.audit.screenshot import CHROMIUM, ChromiumError, capture, dump_dom
from fedseal.audit.serve import make_page, make_server
from fedseal.audit.verify import verify_database
from fedseal.registry.engine import normalise_url


def test_chromium_is_installed() -> None:
    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: run scripts/test.sh, which installs it"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def _report_file(url: str, path: Path) -> Path:
    snapshot, result = verify_database(url)
    report = build_report(snapshot, result)
    path.write_text(render_html(report), encoding="utf-8")
    return path


def _chart_colours(png: Path) -> dict[str, int]:
    """How many pixels of the screenshot have the chart's colours: the first two sites' lines
    (matplotlib's C0 and C1) and the global test score's black line."""
    pixels = (image.imread(png)[..., :3] * 255).round()
    colours = {"C0": (31, 119, 180), "C1": (255, 127, 14), "black": (0, 0, 0)}
    return {name: int((abs(pixels - rgb).max(axis=-1) <= 8).sum()) for name, rgb in colours.items()}


def _shows_the_ledger(dom: str) -> None:
    for site in ("hospital_a", "hospital_b", "hospital_c", "hospital_d"):
        assert site in dom
    assert "ε spent" in dom and "rounds joined (charged)" in dom
    assert "3.2337" in dom  # a cumulative ε of the ledger, as shown in the tables
    assert "run 1: 3; run 2: 1, 2, 3" in dom  # hospital_b's declined rounds
    assert "Privacy against utility" in dom
    assert "global model's test score per round" in dom  # the chart's description
    assert "dp-accounting PLD" in dom and "4.6395" in dom  # hospital_a's last entry's PLD ε


def test_the_report_file_as_chromium_shows_it(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    seq = attach_audit(sqlite_ledger)  # hospital_a's signed membership-inference result
    report = _report_file(sqlite_ledger.url, tmp_path / "report.html")
    dom = dump_dom(report)
    _shows_the_ledger(dom)
    assert "Verified: PASS" in dom and "FAILED" not in dom
    assert (
        "loss-threshold attack on 600 members and 600 non-members: AUC 0.512 [0.480, 0.545], "
        f"ε ≥ 0.000 (95% confidence, δ = 1e-05); run 2 round 3 (events#{seq}): "
        '<span class="ok">consistent with recorded ε 5.1717 (privacy_ledger#24)</span>'
    ) in dom
    assert dom.count("<td>none</td></tr>") == 3  # the sites without an empirical audit
    png = capture(report, tmp_path / "report.png")
    assert _png_size(png) == (1200, 1600)
    assert png.stat().st_size > 50_000  # a rendered page with a chart, not a blank one
    colours = _chart_colours(png)
    assert colours["C0"] > 500 and colours["C1"] > 500, colours  # the sites' ε lines
    assert colours["black"] > 2000, colours  # the score lines, axes and text


@pytest.fixture
def served(sqlite_ledger: Ledger) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, make_page(sqlite_ledger.url))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_the_served_page_as_chromium_shows_it(
    sqlite_ledger: Ledger, served: str, tmp_path: Path
) -> None:
    dom = dump_dom(served)
    _shows_the_ledger(dom)
    assert "Verified: PASS" in dom
    assert _png_size(capture(served, tmp_path / "served.png")) == (1200, 1600)
    database = Path(normalise_url(sqlite_ledger.url).database)
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE privacy_ledger SET epsilon_cumulative = 9.0 WHERE id = 16")
    tampered = dump_dom(served)
    assert "Verification FAILED" in tampered
    assert "privacy_ledger#16 epsilon_cumulative" in tampered


def test_a_missing_chromium_is_an_error_not_a_skip(tmp_path: Path) -> None:
    with pytest.raises(ChromiumError, match="not found"):
        capture(tmp_path / "r.html", tmp_path / "r.png", chromium=tmp_path / "no-chromium")
