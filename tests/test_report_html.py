"""report.html of compare and benchmark: rendering, escaping, atomic writes, and a real headless browser (issue 12, 7)."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path

import pytest
from paths import REPO
from test_benchmark import tiny_demo
from test_evaluate import cloudy_eval  # noqa: F401  (a fixture: the cloudy floor on the synthetic test split)

from m3rcr.benchmark import Benchmark, load_benchmark_config
from m3rcr.cli import main
from m3rcr.reports.html import Figure, Table, number_in, write_html_report

EVIL = "<b>x</b>"
# 9.5 < 10.2 < 100 numerically, but "10.2" < "100" < "2" < "9.5" as strings; "-" is missing
SCORES = [("a", "10.2"), ("b", "9.5"), ("c", "-"), ("d", "100"), ("e", 2)]


def _png(path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(2, 1.5))
    fig.subplots().plot([0, 1, 2], [1, 0, 2])
    fig.savefig(path, dpi=50)
    return path


def _external_urls(text: str) -> list[str]:
    return re.findall(r"https?://[^\s\"'<>]+", text)


@pytest.fixture(scope="module")
def compared(cloudy_eval: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`m3rcr compare` of the cloudy evaluation and a copy named <b>x</b> that has no per-image rows."""
    base = tmp_path_factory.mktemp("compare")
    other = base / "evil"
    other.mkdir()
    m = json.loads((cloudy_eval / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps({**m, "method": EVIL}))
    assert main(["compare", str(cloudy_eval), str(other), "--out", str(base / "out")]) == 0
    return base / "out"


# --------------------------------------------------------------------------- without a browser
def test_render_escapes_every_user_string(tmp_path: Path) -> None:
    page = write_html_report(
        tmp_path / "r" / "report.html", f"Title {EVIL}",
        [Table(f"Table {EVIL}\n\nabout {EVIL}", ["Method", "Score"], [[EVIL, "1.5"], ["plain", None]])],
        [Figure(_png(tmp_path / "f.png"), f"caption {EVIL}")],
        per_image=Table("Per image", ["Method", "Image"], [[EVIL, "n1"]]),
        config={f"section {EVIL}": {"method": EVIL}}, environment={"env": f"text {EVIL}"},
        notes=[f"note `{EVIL}`"])
    text = page.read_text()
    assert EVIL not in text and "<code>" + EVIL not in text
    assert text.count("&lt;b&gt;x&lt;/b&gt;") >= 8  # title x2, table title, description, cells, caption, config, note
    assert "<code>&lt;b&gt;x&lt;/b&gt;</code>" in text  # backticks become code around the escaped text
    assert text.count('src="data:image/png;base64,') == 1 and not _external_urls(text)


def test_numbers_sort_by_value_and_missing_cells_are_marked(tmp_path: Path) -> None:
    assert [number_in(s) for s in ("12.34 ± 0.56", "1,234", "0-20", "+1.5 / -2", "-", "", "n/a", "cpu, 4")] == \
        [12.34, 1234.0, 0.0, 1.5, None, None, None, None]
    text = write_html_report(tmp_path / "report.html", "t", [Table("Scores", ["Method", "Score"], SCORES)], []
                             ).read_text()
    assert re.findall(r'data-type="(\w+)"', text) == ["text", "num"]
    assert re.findall(r'data-v="([^"]*)"', text) == ["10.2", "9.5", "", "100.0", "2.0"]
    assert text.count('class="num missing"') == 1
    with pytest.raises(ValueError, match="row 1 has 1 cells for 2 columns"):
        write_html_report(tmp_path / "bad.html", "t", [Table("Scores", ["Method", "Score"], [["a"]])], [])


def test_write_is_atomic_and_bad_figures_are_named(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    out.write_text("old")
    fake = tmp_path / "fig.png"
    fake.write_text("not a png")
    with pytest.raises(ValueError, match=re.escape(f"{fake}: not a PNG file")):
        write_html_report(out, "t", [], [Figure(fake, "broken")])
    with pytest.raises(ValueError, match=r"anim\.gif: figures must be PNG or JPEG"):
        write_html_report(out, "t", [], [(tmp_path / "anim.gif", "gif")])
    assert out.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["fig.png", "report.html"]
    write_html_report(out, "new", [], [])
    assert "<title>new</title>" in out.read_text() and out.stat().st_mode & 0o044  # usual permissions, not mkstemp's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png", "report.html"]


def test_missing_figure_is_skipped_with_a_note(tmp_path: Path) -> None:
    text = write_html_report(tmp_path / "report.html", "t", [],
                             [Figure(tmp_path / "gone.png", "Lost figure"), Figure(_png(tmp_path / "ok.png"), "Kept")]
                             ).read_text()
    assert "Lost figure" in text and f"gone.png was not found in {tmp_path} (skipped)" in text
    assert text.count("<img ") == 1 and "<b>Figure 2.</b> Kept" in text


def test_per_image_rows_and_provenance_of_seeded_runs(tmp_path: Path) -> None:
    """Two seeds of one method: a Run column; the training run's config.yaml and latest environment.json
    entry (found from the checkpoint path) appear in the configuration and environment sections."""
    from m3rcr.reports.html import evaluation_provenance, per_image_table

    folders = []
    for seed in (0, 1):
        run = tmp_path / "runs" / f"seed{seed}"
        (run / "checkpoints").mkdir(parents=True)
        (run / "config.yaml").write_text(f"seed: {seed}\nmodel: {{name: aligncr}}\n")
        (run / "environment.json").write_text(json.dumps([{"host": "old"}, {"host": f"gpu{seed}"}]))
        ev = tmp_path / "eval" / f"seed{seed}"
        ev.mkdir(parents=True)
        (ev / "metrics.json").write_text(json.dumps({"method": "A", "split": "test", "seed": seed,
                                                     "checkpoint": str(run / "checkpoints" / "best.ckpt"),
                                                     "overall": {"mae": 0.1}}))
        (ev / "metrics.csv").write_text("name,cloud_cover,mae,psnr,extra\n"
                                        f"t1,0.5,0.1{seed},inf,x\nt2,,nan,9.5,\n")
        folders.append(ev)
    table = per_image_table({"A": folders})
    assert table.header == ["Method", "Run", "Image", "Cloud cover (%)", "MAE (x100)", "PSNR (dB)", "extra"]
    assert [(r[1], r[2].text, r[3]) for r in table.rows] == [("seed 0", "t1", ("50.0", 50.0)), ("seed 0", "t2", None),
                                                        ("seed 1", "t1", ("50.0", 50.0)), ("seed 1", "t2", None)]
    assert table.rows[0][5] == ("∞", float("inf")) and table.rows[1][4] is None and table.rows[2][4][0] == "11.00"
    config, env = evaluation_provenance({"A": folders})
    assert config["Evaluation settings (metrics.json)"]["A (seed1)"]["seed"] == 1
    assert "overall" not in config["Evaluation settings (metrics.json)"]["A (seed1)"]
    assert [v for k, v in config.items() if k.startswith("Training configuration: A (seed1)")] == \
        ["seed: 1\nmodel: {name: aligncr}"]
    assert [v for k, v in env.items() if k.startswith("Training: A (seed0)")] == [{"host": "gpu0"}]
    text = write_html_report(tmp_path / "report.html", "t", [], [], table, config, env).read_text()
    assert 'data-v="Infinity"' in text and "host: gpu1" in text
    (tmp_path / "runs" / "seed1" / "environment.json").write_text("{broken")
    _, env = evaluation_provenance({"A": folders})  # a damaged record costs its entry, not the report
    broken = [v for k, v in env.items() if k.startswith("Training: A (seed1)")]
    assert len(broken) == 1 and "not valid JSON" in broken[0]["unreadable"]


def test_template_ships_as_package_data() -> None:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    globs = data["tool"]["setuptools"]["package-data"]["m3rcr.reports"]
    package = REPO / "src" / "m3rcr" / "reports"
    assert any(package.glob(g) for g in globs) and (package / "templates" / "report.html.j2").is_file()
    assert any(d.startswith("jinja2") for d in data["project"]["dependencies"])
    assert any(d.startswith("selenium") for d in data["project"]["optional-dependencies"]["test"])


def test_compare_writes_a_self_contained_report(compared: Path) -> None:
    text = (compared / "report.html").read_text()
    assert not _external_urls(text) and "Content-Security-Policy" in text
    # Fig. 5, Fig. 4 (the cloudy folder saved predictions), Fig. 9, Fig. 8 in that order
    names = re.findall(r'<span class="muted">\((fig_\w+\.png)\)</span>', text)
    assert names == ["fig_metrics_by_cloud_cover.png", "fig_qualitative.png", "fig_ndvi_by_cloud_cover.png",
                     "fig_ndvi_density.png"]
    assert text.count("data:image/png;base64,") == 4
    for title in ("Table II (a)", "Table II (b)", "Table IV", "Cloud-removal checks"):
        assert title in text
    per_image = text.split('id="per-image"')[1].split('id="config"')[0]
    assert per_image.count("<tr>") == 1 + 5  # header + the cloudy folder's 5 images; the copy has no metrics.csv
    assert f"&lt;b&gt;x&lt;/b&gt;: no per-image results in {compared.parent / 'evil'} (no metrics.csv)" in per_image
    assert EVIL not in text and "Evaluation settings (metrics.json)" in text and "torch:" in text


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_benchmark_report_html(synth_root: Path, tmp_path: Path) -> None:
    config = load_benchmark_config(tiny_demo(tmp_path, synth_root, methods=["Cloudy"]))
    del config["segmentation"]
    out = Benchmark(config, tmp_path / "bench", progress=lambda s: None).run()
    text = (out / "report" / "report.html").read_text()
    assert "<title>Benchmark report</title>" in text and "Data: <code>" in text
    assert "Table II (a)" in text and text.count("data:image/png;base64,") == 4
    assert "Benchmark configuration (benchmark_config.yaml)" in text and "Step times in seconds" in text
    per_image = text.split('id="per-image"')[1].split('id="config"')[0]
    assert per_image.count("<tr>") == 1 + 5 and not _external_urls(text)


# --------------------------------------------------------------------------- in a real headless browser
@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    """Headless Chromium through the system chromedriver (Selenium Manager downloads nothing)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip("chromium and chromedriver not found (Debian: apt-get install chromium chromium-driver); "
                    "the browser checks of report.html need them")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}", "--window-size=1280,1600"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    yield driver
    driver.quit()


def _open(driver, page: Path) -> None:
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(page.resolve().as_uri())


def _column(driver, table_id: str, index: int) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.getElementById(arguments[0]).tBodies[0].rows, r => r.cells[arguments[1]]"
        ".textContent.trim())", table_id, index)


def _click_header(driver, table_id: str, title: str) -> None:
    from selenium.webdriver.common.by import By

    header = next(th for th in driver.find_elements(By.CSS_SELECTOR, f"#{table_id} thead th") if th.text == title)
    header.click()


@pytest.mark.browser
def test_compare_report_in_a_browser(browser, compared: Path, tmp_path: Path) -> None:
    page = compared / "report.html"
    _open(browser, page)
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe
    images = browser.execute_script("return Array.from(document.images, i => [i.complete, i.naturalWidth])")
    assert len(images) == 4 and all(done and width > 0 for done, width in images)
    links = browser.execute_script(
        "return Array.from(document.querySelectorAll('[src],[href]'), e => e.getAttribute('src') || "
        "e.getAttribute('href'))")
    assert links and not [u for u in links if re.match(r"(https?:)?//", u)]
    assert not _external_urls(page.read_text())
    # PSNR of the per-image table: numeric order both ways, the rows moving as a whole
    psnr_col = browser.execute_script(
        "return Array.from(document.querySelectorAll('#per-image-table thead th'), th => th.textContent.trim())"
        ).index("PSNR (dB)")
    before = list(zip(_column(browser, "per-image-table", 1), _column(browser, "per-image-table", psnr_col)))
    _click_header(browser, "per-image-table", "PSNR (dB)")
    after = list(zip(_column(browser, "per-image-table", 1), _column(browser, "per-image-table", psnr_col)))
    assert after == sorted(before, key=lambda r: float(r[1]))
    _click_header(browser, "per-image-table", "PSNR (dB)")
    assert [float(v) for v in _column(browser, "per-image-table", psnr_col)] == \
        sorted((float(v) for _, v in before), reverse=True)
    assert browser.save_screenshot(str(tmp_path / "compare.png")) and (tmp_path / "compare.png").stat().st_size > 0
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


@pytest.mark.browser
def test_numeric_sort_in_a_browser(browser, compared: Path, tmp_path: Path) -> None:
    page = write_html_report(tmp_path / "report.html", "Sorting", [Table("Scores", ["Method", "Score"], SCORES)],
                             [Figure(compared / "fig_metrics_by_cloud_cover.png", "Fig. 5")])
    _open(browser, page)
    assert _column(browser, "scores", 1) == ["10.2", "9.5", "-", "100", "2"]
    _click_header(browser, "scores", "Score")
    assert _column(browser, "scores", 1) == ["2", "9.5", "10.2", "100", "-"]  # missing values last
    assert _column(browser, "scores", 0) == ["e", "b", "a", "d", "c"]
    _click_header(browser, "scores", "Score")
    assert _column(browser, "scores", 1) == ["100", "10.2", "9.5", "2", "-"]
    _click_header(browser, "scores", "Method")
    assert _column(browser, "scores", 0) == ["a", "b", "c", "d", "e"]
    assert browser.execute_script("return document.images[0].naturalWidth") > 0
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
