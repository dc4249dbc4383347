"""The HTML report of `shopml monitor`: one self-contained file (no scripts, no external assets).

It opens with the verdict (which columns drifted, under which rule), then the drift table of
every column, the live performance tables of the providers, and the distributions: for each
column the reference's and the new data's bin shares overlaid as bars in an inline SVG (drifted
columns first, then by PSI), so it renders in any browser and inside MLflow's artifact view.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path

from features.reference import ColumnProfile, Profile, shares

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#222;max-width:1200px}
h1{font-size:1.5rem} h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.3rem .6rem;text-align:right} th{background:#f4f4f4}
td.l,th.l{text-align:left}
.ok{background:#e6f4ea;border:1px solid #8c8;padding:.6rem;border-radius:4px}
.warn{background:#fdecea;border:1px solid #d88;padding:.6rem;border-radius:4px}
.drift{color:#c0392b;font-weight:600}
.dist{display:inline-block;vertical-align:top;margin:.4rem;border:1px solid #eee;padding:.3rem}
.dist h3{font-size:.85rem;margin:.1rem 0 .3rem 0}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 .8rem}
.muted{color:#777}
"""
REF_COLOR, NEW_COLOR = "#9aa5b1", "#d35400"


def _esc(v) -> str:
    return html.escape(str(v))


def distribution_svg(reference: ColumnProfile, new: ColumnProfile, width: int = 360) -> str:
    """Bars of the reference's (grey) and the new data's (orange) bin shares, one pair per bin;
    bins empty on both sides are left out. Hovering a bar shows its bin and share."""
    ref_p, new_p = shares(reference.counts, 0.0), shares(new.counts, 0.0)
    labels = reference.labels()
    keep = [i for i in range(len(labels)) if ref_p[i] > 0 or new_p[i] > 0]
    height, pad, base = 150, 4, 130
    top = max([ref_p[i] for i in keep] + [new_p[i] for i in keep] + [1e-9])
    slot = (width - 2 * pad) / max(1, len(keep))
    bar = max(1.0, slot / 2 - 1)
    parts = [
        f'<svg width="{width}" height="{height}" role="img" xmlns="http://www.w3.org/2000/svg">'
    ]
    parts.append(f'<line x1="0" y1="{base}" x2="{width}" y2="{base}" stroke="#ccc"/>')
    for j, i in enumerate(keep):
        x = pad + j * slot
        for k, (p, color, who) in enumerate(
            ((ref_p[i], REF_COLOR, "reference"), (new_p[i], NEW_COLOR, "new"))
        ):
            h = (base - 10) * p / top
            parts.append(
                f'<rect x="{x + k * bar:.1f}" y="{base - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{color}"><title>{_esc(labels[i])}: {who} '
                f"{p:.1%}</title></rect>"
            )
    first, last = (labels[keep[0]], labels[keep[-1]]) if keep else ("", "")
    parts.append(f'<text x="{pad}" y="{height - 4}" font-size="10">{_esc(first)}</text>')
    parts.append(
        f'<text x="{width - pad}" y="{height - 4}" font-size="10" text-anchor="end">'
        f"{_esc(last)}</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def render_report(outcome, reference: Profile, new: Profile) -> str:
    """The whole report of one family's monitor run (`training.monitor.MonitorOutcome`)."""
    o = outcome
    drifted = [d for d in o.drift if d.drifted]
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>shopml monitor {_esc(o.family)}</title><style>{CSS}</style></head><body>",
        f"<h1>shopml monitor: {_esc(o.family)} v{_esc(o.version or '?')}</h1>",
        f"<p class='muted'>new data: {_esc(o.source)}; rule: {_esc(o.rule_text)}; written "
        f"{datetime.now(UTC).isoformat(timespec='seconds')}</p>",
    ]
    if drifted or o.alarms:
        names = ", ".join(d.name for d in drifted)
        listed = f": {_esc(names)}" if names else ""
        out.append(
            f"<p class='warn' id='verdict'>DRIFT: {len(drifted)} column(s) crossed the "
            f"thresholds{listed}</p>"
        )
        for a in o.alarms:
            out.append(f"<p class='warn'>alarm: {_esc(a)}</p>")
    else:
        out.append(
            f"<p class='ok' id='verdict'>No drift: none of {len(o.drift)} columns crossed the "
            "thresholds</p>"
        )
    for note in o.notes:
        out.append(f"<p class='muted'>note: {_esc(note)}</p>")
    out.append("<h2>Drift per column</h2><table><tr><th class='l'>column</th><th>PSI</th>")
    out.append("<th>chi2</th><th>chi2 p</th><th>KS</th><th>KS p</th><th>n reference</th>")
    out.append("<th>n new</th><th class='l'>verdict</th></tr>")
    for d in o.drift:
        cls = " class='drift'" if d.drifted else ""
        ks = "" if d.ks is None else f"{d.ks:.3f}"
        ks_p = "" if d.ks_p_value is None else f"{d.ks_p_value:.2g}"
        out.append(
            f"<tr{cls} id='col-{_esc(d.name)}'><td class='l'>{_esc(d.name)}</td>"
            f"<td>{d.psi:.4f}</td><td>{d.statistic:.1f}</td><td>{d.p_value:.2g}</td>"
            f"<td>{ks}</td><td>{ks_p}</td><td>{d.n_reference:.0f}</td><td>{d.n_new:.0f}</td>"
            f"<td class='l'>{'DRIFT' if d.drifted else 'ok'}: {_esc(d.reason)}</td></tr>"
        )
    out.append("</table>")
    for t in o.tables:
        out.append(f"<h2>{_esc(t.title)}</h2><table><tr>")
        out.extend(f"<th>{_esc(c)}</th>" for c in t.columns)
        out.append("</tr>")
        for row in t.rows:
            cells = (f"{v:.4g}" if isinstance(v, float) else str(v) for v in row)
            out.append("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in cells) + "</tr>")
        out.append("</table>")
        if t.note:
            out.append(f"<p class='muted'>{_esc(t.note)}</p>")
    out.append("<h2>Distributions</h2><p class='legend'>")
    out.append(f"<span style='background:{REF_COLOR}'></span>reference")
    out.append(f"<span style='background:{NEW_COLOR}'></span>new data</p>")
    for d in sorted(o.drift, key=lambda d: (not d.drifted, -d.psi)):
        svg = distribution_svg(reference.columns[d.name], new.columns[d.name])
        mark = " <span class='drift'>DRIFT</span>" if d.drifted else ""
        out.append(
            f"<div class='dist' id='dist-{_esc(d.name)}'><h3>{_esc(d.name)}: PSI "
            f"{d.psi:.3f}{mark}</h3>{svg}</div>"
        )
    out.append("</body></html>")
    return "\n".join(out)


def write_report(outcome, reference: Profile, new: Profile, path: str | Path) -> Path:
    """Write the report to `path` (its folder is created); the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(outcome, reference, new), encoding="utf-8")
    return path
