"""Markdown tables of a suite's results, and the marked sections of the pages that show them."""

from __future__ import annotations

import re
from pathlib import Path

from .scalar import DISTILLED, SUPERVISED, Score

METHODS = ("noisy", "Gaussian blur", "NLM", "NLM, estimated sigma", "BM3D", "BM4D", "BSN", "diffusion + SRDS",
           DISTILLED, SUPERVISED)
# tools users already have (CAREamics would join when installable)
PEERS = ("Gaussian blur", "NLM", "NLM, estimated sigma", "BM3D", "BM4D")
SHORT = {DISTILLED: "distilled", SUPERVISED: "supervised (ceiling)", "diffusion + SRDS": "SRDS"}


def _cases(scores: list[Score]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((s.data, s.noise) for s in scores))


def _lookup(scores: list[Score]) -> dict[tuple[str, str, str], Score]:
    return {(s.data, s.noise, s.method): s for s in scores}


def gaps(scores: list[Score]) -> list[tuple[str, str, str, float, float]]:
    """Per case: (data, noise, best peer, distilled - best peer PSNR, distilled - supervised ceiling PSNR)."""
    table = _lookup(scores)
    rows = []
    for data, noise in _cases(scores):
        peers = [table[data, noise, m] for m in PEERS if (data, noise, m) in table]
        best = max(peers, key=lambda s: s.psnr_db)
        ours = table[data, noise, DISTILLED].psnr_db
        rows.append((data, noise, best.method, ours - best.psnr_db, ours - table[data, noise, SUPERVISED].psnr_db))
    return rows


def metric_table(scores: list[Score], metric: str, title: str) -> str:
    """One row per case, one column per method, the best self-supervised value in bold."""
    table = _lookup(scores)
    methods = [m for m in METHODS if any(s.method == m for s in scores)]
    lines = [f"| data | noise | {' | '.join(SHORT.get(m, m) for m in methods)} |",
             "|---|---|" + "---|" * len(methods)]
    for data, noise in _cases(scores):
        values = {m: getattr(table[data, noise, m], metric) for m in methods if (data, noise, m) in table}
        best = max(v for m, v in values.items() if m not in ("noisy", SUPERVISED))
        cells = [("**{:.2f}**" if v == best else "{:.2f}").format(v) if (v := values.get(m)) is not None else "-"
                 for m in methods]
        lines.append(f"| {data} | {noise} | {' | '.join(cells)} |")
    return "\n".join([f"{title}; bold: the best without clean data", "", *lines])


def gap_table(scores: list[Score]) -> str:
    lines = ["| data | noise | best peer | distilled - best peer (dB) | distilled - supervised ceiling (dB) |",
             "|---|---|---|---|---|"]
    lines += [f"| {d} | {n} | {peer} | {a:+.2f} | {b:+.2f} |" for d, n, peer, a, b in gaps(scores)]
    return "\n".join(lines)


def case_tables(scores: list[Score]) -> str:
    """Every score of every case: setting chosen, PSNR, SSIM, detail PSNR, seconds per slice, total seconds."""
    parts = []
    for data, noise in _cases(scores):
        rows = [s for s in scores if (s.data, s.noise) == (data, noise)]
        parts += [f"**{data}, {noise}**", "",
                  "| method | setting | PSNR (dB) | SSIM | detail PSNR (dB) | s/slice | total s |",
                  "|---|---|---|---|---|---|---|",
                  *(f"| {s.method} | {s.setting} | {s.psnr_db:.2f} | {s.ssim:.4f} | {s.detail_psnr_db:.2f} | "
                    f"{s.seconds_per_slice:.3f} | {s.total_seconds:.1f} |" for s in rows), ""]
    return "\n".join(parts)


def cost_tables(cost: dict) -> str:
    """The speed, training and growth tables of :class:`..cost.Cost` (as a dict)."""
    small, large = cost["sizes"]
    lines = [f"| method | setting | s/slice {small} x {small} | s/slice {large} x {large} |", "|---|---|---|---|"]
    lines += [f"| {m} | {s} | {a:.3f} | {b:.3f} |" for m, s, a, b in cost["speed"]]
    lines += ["", "| preset | stage | steps | s/step (measured) | stage time (s, estimated) |", "|---|---|---|---|---|"]
    lines += [f"| {p} | {st} | {n} | {per:.3f} | {total:.0f} |" for p, st, n, per, total in cost["training"]]
    lines += ["", "| grown | factor | slices | side (px) | training s | inference s | total s | peak RSS (GB) |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {a} | x{f} | {n} | {side} | {tr:.1f} | {inf:.1f} | {tot:.1f} | {gb:.2f} |"
              for a, f, n, side, tr, inf, tot, gb in cost["growth"]]
    return "\n".join(lines)


def replace_marked(page: Path, name: str, body: str) -> None:
    """Put ``body`` between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in ``page`` (a README or docs page)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = page.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{page} has no '{start}' ... '{end}' markers: add them where the results go")
    page.write_text(pattern.sub(lambda _: f"{start}\n{body.strip()}\n{end}", text), encoding="utf-8")


def replace_section(page: Path, suite: str, body: str) -> None:
    """Put a suite's ``body`` between its markers (``<!-- benchmark-suite NAME:start/end -->``) in ``page``."""
    replace_marked(page, f"benchmark-suite {suite}", body)
