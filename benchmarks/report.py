"""Markdown tables of a suite's results (issue 27's targets over the noise seeds, methods side by side, every
score), its combined page and CSV, and the marked sections of the pages that show them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .scalar import DISTILLED, FORCED_PUCA, SRDS, SUPERVISED, Score, case_name, read_case, write_scores

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


def _spread(values: list[float], digits: int = 2) -> str:
    """The mean of ``values``, with their range after it when there are several (one per noise seed)."""
    mean = f"{np.mean(values):+.{digits}f}"
    return mean if len(values) == 1 else f"{mean} [{min(values):+.{digits}f}, {max(values):+.{digits}f}]"


def _verdict(gaps: list[float], target: float, digits: int = 2) -> str:
    """Mean gap (and its range over seeds) and whether the mean meets ``target``."""
    mean = float(np.mean(gaps))
    return f"{_spread(gaps, digits)} {'met' if mean >= target else f'missed by {target - mean:.{digits}f}'}"


# Issue 27's targets for the distilled NAFNet, per preset: (peer, PSNR margin dB, SSIM at least the peer's)
PEER_TARGETS = {"quick": (("BM3D", 0.0, False), ("NLM, estimated sigma", 1.0, False)),
                "standard": (("BM3D", 1.0, True), ("BM4D", 0.5, True))}


def target_table(cases: dict[tuple[str, str], list[dict[str, Score]]], preset: str) -> str:
    """Issue 27's targets per (data, noise) case, each a list of {method: score} over the noise seeds: the
    distilled NAFNet against the peers of ``preset`` (:data:`PEER_TARGETS`; a peer not installed or not run shows
    "-"), its SSIM against the BSN's, SRDS against the BSN (PSNR and SSIM); and on correlated noise LG-BPN
    against forced PUCA. Every gap is the mean over the seeds, its range in brackets."""
    targets = PEER_TARGETS.get(preset, PEER_TARGETS["quick"])
    peer_columns = "".join(f" distilled - {peer} (>= {margin:+.1f}{', SSIM >=' if with_ssim else ''}) |"
                           for peer, margin, with_ssim in targets)
    lines = [f"| data, noise | seeds | BSN | SRDS | distilled |{peer_columns} distilled SSIM - BSN's (>= 0) "
             "| SRDS - BSN (>= 0; SSIM >= 0) | LG-BPN - PUCA (> 0) |",
             "|---|---|---|---|---|" + "---|" * (len(targets) + 3)]

    def gaps(first: str, second: str, field: str = "psnr_db") -> list[float] | None:
        if not all(first in seed and second in seed for seed in seeds):
            return None
        return [getattr(seed[first], field) - getattr(seed[second], field) for seed in seeds]

    def mean_scores(method: str) -> str:
        if not all(method in seed for seed in seeds):
            return "-"
        return (f"{np.mean([s[method].psnr_db for s in seeds]):.2f} / "
                f"{np.mean([s[method].ssim for s in seeds]):.3f}")

    for (data, noise), seeds in cases.items():
        cells = []
        for peer, margin, with_ssim in targets:
            psnr_gaps = gaps(DISTILLED, peer)
            cells.append("-" if psnr_gaps is None else _verdict(psnr_gaps, margin) + (
                f"; SSIM {_verdict(gaps(DISTILLED, peer, 'ssim'), 0.0, 3)}" if with_ssim else ""))
        srds, puca = gaps(SRDS, "BSN"), gaps("BSN", FORCED_PUCA)
        srds_cell = "-" if srds is None else (f"{_verdict(srds, 0.0)}; "
                                              f"SSIM {_verdict(gaps(SRDS, 'BSN', 'ssim'), 0.0, 3)}")
        puca_cell = "-" if puca is None else f"{_spread(puca)} {'met' if np.mean(puca) > 0 else 'missed'}"
        lines.append(f"| {data}, {noise} | {len(seeds)} | {mean_scores('BSN')} ({seeds[0]['BSN'].setting}) | "
                     f"{mean_scores(SRDS)} | {mean_scores(DISTILLED)} | " + " | ".join(cells)
                     + f" | {_verdict(gaps(DISTILLED, 'BSN', 'ssim'), 0.0, 3)} | {srds_cell} | {puca_cell} |")
    return "\n".join(lines)


def finished_cases(folder: Path, cases: tuple[tuple[str, str], ...]) -> list[tuple[str, str, int]]:
    """(data, noise, seed) of every finished case of ``cases`` in ``folder``, in the order of ``cases``, each
    case's seeds in order."""
    order = {case: index for index, case in enumerate(cases)}
    by_stem = {case_name(data, noise, 0).rsplit("_seed", 1)[0]: (data, noise) for data, noise in cases}
    found = []
    for path in folder.glob("*_seed*.md"):
        stem, seed = path.stem.rsplit("_seed", 1)
        if stem in by_stem:
            found.append((*by_stem[stem], int(seed)))
    return sorted(found, key=lambda key: (order[key[:2]], key[2]))


def combine(folder: Path, out: Path, stem: str, header: str, cases: tuple[tuple[str, str], ...],
            targets: str) -> list[tuple[int, Score]]:
    """Gather the finished cases of ``cases`` in ``folder`` into ``<out>/<stem>.md`` (``header``, the target
    table of ``targets`` over the seeds, then each case's section) and ``<out>/<stem>.csv`` (every score, with
    its seed first); returns the (seed, score) pairs."""
    finished = finished_cases(folder, cases)
    by_case: dict[tuple[str, str], list[dict[str, Score]]] = {}
    rows: list[tuple[int, Score]] = []
    for data, noise, seed in finished:
        scores = read_case(folder / f"{case_name(data, noise, seed)}.csv")
        by_case.setdefault((data, noise), []).append({s.method: s for s in scores})
        rows += [(seed, s) for s in scores]
    sections = [(folder / f"{case_name(*key)}.md").read_text(encoding="utf-8") for key in finished]
    (out / f"{stem}.md").write_text(header + "\n\n" + target_table(by_case, targets) + "\n\n" + "\n".join(sections),
                                    encoding="utf-8")
    write_scores(out / f"{stem}.csv", [s for _, s in rows], [seed for seed, _ in rows])
    return rows


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
