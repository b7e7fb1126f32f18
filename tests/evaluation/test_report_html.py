"""report.html renders in headless Chromium without console errors and shows its plots."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

PROBE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  window.__errors.push("error: " + (e.message || (e.target && (e.target.src || e.target.href)) || "?"));
}, true);
var _ce = console.error;
console.error = function () {
  window.__errors.push("console: " + Array.from(arguments).join(" "));
  _ce.apply(console, arguments);
};
window.addEventListener("load", function () {
  var imgs = Array.from(document.images);
  var probe = document.createElement("pre");
  probe.id = "__probe";
  probe.textContent = JSON.stringify({
    errors: window.__errors,
    images: imgs.length,
    loaded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    figures: Array.from(document.querySelectorAll("figure.plot")).map(function (f) { return f.id; }),
    first_section: (function () {
      var el = document.body.firstElementChild;
      while (el && el.tagName !== "SECTION" && el.tagName !== "H2") { el = el.nextElementSibling; }
      return el ? (el.id || el.tagName) : null;
    })(),
    verdict_text: (document.getElementById("verdict") || {}).textContent || "",
    gallery: Array.from(document.querySelectorAll("figure.plot-gallery")).map(function (f) {
      return {
        id: f.id,
        caption_first: f.firstElementChild && f.firstElementChild.tagName === "FIGCAPTION",
        rows: Array.from(f.querySelectorAll("table.gallery-rows tr")).slice(1).map(function (tr) {
          return [tr.querySelector(".label").textContent, tr.querySelector(".clean").textContent,
                  tr.querySelector(".adv").textContent];
        })
      };
    }),
    broken_anchors: Array.from(document.querySelectorAll("a[href^='#']")).filter(function (a) {
      return !document.getElementById(a.getAttribute("href").slice(1));
    }).map(function (a) { return a.getAttribute("href"); })
  });
  document.body.appendChild(probe);
});
</script>"""


def test_report_renders_in_headless_chromium(tiny_run, tmp_path):
    _, results, run_dir, _ = tiny_run
    html = (run_dir / "report.html").read_text()
    # self-contained: no scripts, no external URLs, plots inline
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert "url(" not in html
    assert html.count('src="data:image/png;base64,') >= 5
    probed = tmp_path / "report.html"
    probed.write_text(html.replace("<head>", "<head>\n" + PROBE, 1))
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            probed.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'<pre id="__probe">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"the page did not finish loading: {proc.stdout[-500:]}"
    probe = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["errors"] == []
    assert probe["images"] == probe["loaded"] >= 5
    for plot in (
        "robust_accuracy_linf",
        "robust_accuracy_l2",
        "gallery_bare_whitebox",
        "gallery_med_adaptive",
        "confusion_bare",
        "confusion_med",
    ):
        assert plot in probe["figures"]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
    # the verdict box is the first section, before any other heading
    assert probe["first_section"] == "verdict"
    verdict = probe["verdict_text"]
    assert "Verdict:" in verdict and "Threat model" in verdict and "What was audited" in verdict
    for w in results["verdict"]["headline"]:
        iv = w["robust_accuracy"]
        assert f"{iv['value']:.2f} [{iv['ci'][0]:.2f}, {iv['ci'][1]:.2f}]" in verdict
    assert "grey levels" in verdict and "whitebox" in verdict and "adaptive" in verdict
    # gallery rows are flipped examples: clean prediction = true class, adversarial prediction differs
    assert probe["gallery"], "no gallery figure"
    for fig in probe["gallery"]:
        assert fig["caption_first"] and fig["rows"], fig
        for label, clean, adv in fig["rows"]:
            assert clean.split(" (")[0] == label and adv.split(" (")[0] != label
            assert re.search(r"\(\d\.\d\d\)$", clean) and re.search(r"\(\d\.\d\d\)$", adv)
    assert probe["broken_anchors"] == []  # flag links point inside the report
    # the rendered DOM carries the numbers of results.json
    assert "Robust accuracy" in proc.stdout and results["name"] in proc.stdout
    first = results["cells"][0]
    assert f"{first['metrics']['robust_accuracy']:.3f}" in proc.stdout
