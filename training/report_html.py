"""A self-contained HTML comparison report: the gate's verdict, tables plus overlaid plots as
embedded PNGs.

One file, no external assets, so it can be mailed, attached to a ticket or opened from MLflow.
It opens with the verdict (promote / refuse and why, the gate's own checks), then says whether
the runs saw the same data and the same test and warns when a test is too small to decide.
"""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import UTC, datetime
from pathlib import Path

from training.compare import Comparison, Curve
from training.runs import format_number
from training.tracking import pyplot

# axis labels and reference lines of the curves the jobs log (unknown names get generic labels)
CURVE_STYLE: dict[str, dict] = {
    "pr_curve": {"title": "Precision-recall", "x": "recall", "y": "precision"},
    "roc_curve": {
        "title": "ROC",
        "x": "false positive rate",
        "y": "true positive rate",
        "diagonal": True,
    },
    # fraud probabilities crowd near 0: log-log axes spread the bins out (the diagonal is ideal)
    "calibration": {
        "title": "Calibration (log-log)",
        "x": "mean predicted probability (log)",
        "y": "observed fraud rate (log)",
        "diagonal": True,
        "xscale": "log",
        "yscale": "log",
    },
    "recall_at_k": {"title": "Recall@k", "x": "k", "y": "recall", "xscale": "log"},
    "coverage_at_k": {"title": "Catalog coverage@k", "x": "k", "y": "coverage", "xscale": "log"},
    "ndcg_at_k": {"title": "nDCG@k", "x": "k", "y": "nDCG", "xscale": "log"},
    "error_by_horizon": {"title": "Error by horizon", "x": "horizon (days ahead)", "y": "error"},
    "wape_by_horizon": {"title": "WAPE by horizon", "x": "horizon (days ahead)", "y": "WAPE"},
}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#222;max-width:1200px}
h1{font-size:1.5rem} h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.3rem .6rem;text-align:right} th{background:#f4f4f4}
td.l,th.l{text-align:left} code{font-size:.85rem}
.ok{background:#e6f4ea;border:1px solid #8c8;padding:.6rem;border-radius:4px}
.warn{background:#fdecea;border:1px solid #d88;padding:.6rem;border-radius:4px}
.better{color:#1a7f37;font-weight:600} .worse{color:#c0392b;font-weight:600}
.plots img{max-width:560px;margin:.3rem;border:1px solid #eee}
.muted{color:#777}
.verdict{font-size:1.05rem;margin:.4rem 0} .verdict b{font-size:1.1rem}
"""


def render_report(comparison: Comparison) -> str:
    """The report as one HTML string."""
    c = comparison
    e = html.escape
    title = f"shopml compare: {c.family} — " + " vs ".join(r.short_id for r in c.runs)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p class='muted'>generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; baseline for deltas: "
        f"run <code>{e(c.baseline.run_id)}</code>; primary metric <b>{e(c.spec.primary)}</b> "
        f"({e(c.spec.direction)} is better)</p>",
        "<h2>Verdict</h2>",
        _verdicts(c),
        _data_banner(c),
        _small_tests(c),
        "<h2>Runs</h2>",
        _runs_table(c),
        "<h2>Metrics</h2>",
        _metrics_table(c),
    ]
    params = c.param_differences()
    if params:
        parts += ["<h2>Parameters that differ</h2>", _params_table(c, params)]
    parts += ["<h2>Plots</h2>", _plots(c), "</body></html>"]
    return "\n".join(parts)


def write_report(comparison: Comparison, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(comparison), encoding="utf-8")
    return path


def _verdicts(c: Comparison) -> str:
    """Promote or refuse for each challenger, in one line, with the gate checks that decided."""
    e = html.escape
    parts = []
    for v in c.verdicts():
        cls = "ok" if v.promote else "warn"
        word = "PROMOTE" if v.promote else "REFUSE"
        who = f"{v.challenger.short_id} over {v.incumbent.short_id}"
        why = (
            "every gate check passes"
            if v.promote
            else "failed: " + ", ".join(ch.name for ch in v.failed)
        )
        rows = "".join(
            f"<li>[{'pass' if ch.passed else 'FAIL'}] <b>{e(ch.name)}</b>: {e(ch.detail)}</li>"
            for ch in v.checks
        )
        parts.append(
            f"<div class='{cls} verdict' id='verdict-{e(v.challenger.short_id)}'>"
            f"<b>Verdict: {word}</b> {e(who)} ({e(c.family)} gate): {e(why)}<ul>{rows}</ul></div>"
        )
    return "".join(parts)


def _small_tests(c: Comparison) -> str:
    items = c.small_tests()
    if not items:
        return ""
    li = "".join(f"<li>{html.escape(t)}</li>" for t in items)
    return (
        "<div class='warn'><b>Small test:</b> too little evidence to decide; the gate refuses "
        f"(thresholds: the family's <code>min_evidence</code>).<ul>{li}</ul></div>"
    )


def _data_banner(c: Comparison) -> str:
    e = html.escape
    if c.comparable:
        return (
            "<p class='ok'>Same data, same test: every run was evaluated on data fingerprint "
            f"<code>{e(c.fingerprints[0])}</code> with test protocol "
            f"<code>{e(c.signatures[0])}</code>.</p>"
        )
    if c.same_data:
        diffs = "".join(f"<li>{e(d)}</li>" for d in c.test_differences()) or (
            "<li>some run logged no evaluation protocol</li>"
        )
        return (
            "<div class='warn'><b>Same data, different test:</b> the runs were evaluated on the "
            "same data but with different test protocols, so their metric deltas are not "
            f"comparable (promotion would refuse).<ul>{diffs}</ul></div>"
        )
    items = "".join(
        f"<li><code>{e(r.short_id)}</code>: <code>{e(r.fingerprint or 'none')}</code></li>"
        for r in c.runs
    )
    return (
        "<div class='warn'><b>Different data:</b> the runs were not evaluated on the same data, "
        f"so their metric deltas are not comparable (promotion would refuse).<ul>{items}</ul></div>"
    )


def _runs_table(c: Comparison) -> str:
    e = html.escape
    rows = [
        "<table><tr><th class='l'>run</th><th class='l'>name</th><th class='l'>started</th>"
        "<th class='l'>data</th><th class='l'>test</th><th class='l'>model</th>"
        "<th class='l'>git</th></tr>"
    ]
    for r in c.runs:
        model = (
            f"v{r.model_version}" + (" @" + ",".join(r.aliases) if r.aliases else "")
            if r.model_version
            else ""
        )
        started = r.start_time.strftime("%Y-%m-%d %H:%M") if r.start_time else ""
        rows.append(
            f"<tr><td class='l'><code>{e(r.run_id)}</code></td><td class='l'>{e(r.name)}</td>"
            f"<td class='l'>{e(started)}</td><td class='l'><code>{e(r.fingerprint or '')}</code></td>"
            f"<td class='l'><code>{e(r.signature or '')}</code></td>"
            f"<td class='l'>{e(model)}</td><td class='l'><code>{e(r.tags.get('git.commit', '')[:10])}</code></td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _metrics_table(c: Comparison) -> str:
    e = html.escape
    roles = {c.spec.primary: "primary", **{g.metric: "guard" for g in c.spec.guards}}
    head = "<tr><th class='l'>metric</th>" + "".join(f"<th>{e(r.short_id)}</th>" for r in c.runs)
    head += "".join(f"<th>&Delta; {e(r.short_id)}</th>" for r in c.runs[1:]) + "</tr>"
    rows = ["<table>", head]
    for m in c.metric_names():
        role = f" <span class='muted'>({roles[m]})</span>" if m in roles else ""
        cells = "".join(f"<td>{format_number(r.metrics.get(m))}</td>" for r in c.runs)
        for r in c.runs[1:]:
            d = c.delta(r, m)
            better = c.better(r, m)
            cls = "" if better is None else (" class='better'" if better else " class='worse'")
            cells += f"<td{cls}>{'' if d is None else f'{d:+.4g}'}</td>"
        rows.append(f"<tr><td class='l'>{e(m)}{role}</td>{cells}</tr>")
    rows.append("</table>")
    return "".join(rows)


def _params_table(c: Comparison, params: list[str]) -> str:
    e = html.escape
    head = (
        "<tr><th class='l'>parameter</th>"
        + "".join(f"<th>{e(r.short_id)}</th>" for r in c.runs)
        + "</tr>"
    )
    rows = ["<table>", head]
    for p in params:
        cells = "".join(f"<td>{e(r.params.get(p, ''))}</td>" for r in c.runs)
        rows.append(f"<tr><td class='l'>{e(p)}</td>{cells}</tr>")
    rows.append("</table>")
    return "".join(rows)


def _plots(c: Comparison) -> str:
    names = c.curve_names()
    images = [_curve_png(c, n) for n in names]
    note = ""
    if not names:
        note = (
            "<p class='muted'>No curve data logged by these runs (jobs log curves with "
            "<code>training.tracking.log_curve(name, x, y)</code> as <code>curves/&lt;name&gt;.json</code>); "
            "comparing metrics only.</p>"
        )
        bars = _metric_bars(c)
        if bars:
            images.append(bars)
    imgs = "".join(f"<img alt='plot' src='data:image/png;base64,{b}'>" for b in images)
    return f"{note}<div class='plots'>{imgs}</div>"


def _png(fig) -> str:
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _curve_png(c: Comparison, name: str) -> str:
    plt = pyplot()
    style = CURVE_STYLE.get(name, {"title": name, "x": "x", "y": "y"})
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in c.runs:
        curve: Curve | None = c.curves.get(r.run_id, {}).get(name)
        if curve is None:
            continue
        line = ax.plot(
            curve.x,
            curve.y,
            marker="." if len(curve.x) <= 40 else None,
            label=f"{r.short_id} {r.name}",
        )[0]
        for key, values in curve.extra.items():
            ax.plot(
                curve.x,
                values,
                linestyle="--",
                color=line.get_color(),
                alpha=0.6,
                label=f"{r.short_id} {key}",
            )
    _axes(ax, style, [cv[name] for cv in c.curves.values() if name in cv])
    ax.set_title(style["title"])
    ax.set_xlabel(style["x"])
    ax.set_ylabel(style["y"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _axes(ax, style: dict, curves: list[Curve]) -> None:
    """Log scales where the style asks and the data allow, and the ideal diagonal over the data."""
    xs = [v for cv in curves for v in cv.x]
    ys = [v for cv in curves for v in cv.y]
    logx = style.get("xscale") == "log" and bool(xs) and min(xs) > 0
    positive = [v for v in ys if v > 0]
    logy = style.get("yscale") == "log" and bool(positive)
    if style.get("diagonal"):
        lo = min([v for v in xs + ys if v > 0] or [1e-3]) if (logx or logy) else 0.0
        hi = max([*xs, *ys, 1e-3])
        ax.plot([lo, hi], [lo, hi], color="#999", linestyle=":", linewidth=1, label="ideal")
    if logx:
        ax.set_xscale("log", nonpositive="mask")
    if logy:
        ax.set_yscale("log", nonpositive="mask")
        hidden = len(ys) - len(positive)  # a log axis cannot draw bins without a single fraud
        if hidden:
            note = f"{hidden} bin(s) with rate 0 not shown"
            ax.text(0.02, 0.98, note, transform=ax.transAxes, va="top", fontsize=8, color="#777")


def _metric_bars(c: Comparison) -> str | None:
    names = [m for m in c.metric_names() if all(_finite(r.metrics.get(m)) for r in c.runs)][:8]
    if not names:
        return None
    plt = pyplot()
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.4 * rows), squeeze=False)
    for ax, m in zip(axes.flat, names, strict=False):
        ax.bar(
            [r.short_id for r in c.runs],
            [r.metrics[m] for r in c.runs],
            color=[f"C{i}" for i in range(len(c.runs))],
        )
        ax.set_title(m, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
