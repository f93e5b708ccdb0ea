"""The result tables of the docs, generated from the comparisons behind them, so that a table
cannot drift from its numbers: each block between `<!-- table: NAME -->` and `<!-- /table -->`
in a markdown file is rebuilt from `NAME_comparison.json` beside it, judged by this version's
statistics (`add_verdicts`, with the marker's `min-effect=` if it names one); that JSON and
`NAME_report.md`, where there is one, are rewritten with the same judgement.

    python -m cifar_dcgan.compare.tables docs/results/*.md          # rewrite the blocks
    python -m cifar_dcgan.compare.tables --check docs/results/*.md  # exit 1 if one differs
"""

import argparse
import json
import re
import sys
from pathlib import Path

from cifar_dcgan.compare.groups import seed_order
from cifar_dcgan.compare.report import add_verdicts, from_runs, markdown
from cifar_dcgan.compare.stats import mean_ci, number
from cifar_dcgan.compare.text import literal
from cifar_dcgan.compare.verdicts import valid_effect

BLOCK = re.compile(
    r"(<!-- table: (?P<name>[\w-]+)(?: min-effect=(?P<effect>[\d.]+%?))? -->\n)"
    r"(?P<body>.*?)(<!-- /table -->)",
    re.S,
)


def table(result: dict) -> str:
    """One row per arm: its seeds' best FCDs, their mean, the difference from the baseline
    with its uncorrected and simultaneous intervals, the verdict, and what it rules out."""
    m = len(result["groups"]) - 1
    lines = [
        "| arm | best FCD per seed | mean [95%] | difference [95%] | "
        + ("corrected for all arms (Holm) | " if m > 1 else "")
        + "verdict | rules out |",
        "|---|---|---|---|" + ("---|" if m > 1 else "") + "---|---|",
    ]
    for g in result["groups"]:
        seeds = ", ".join(
            number(r["best_fcd"]) for r in sorted(g["runs"], key=lambda r: seed_order(r["seed"]))
        )
        name = f"{g['label']} (baseline)" if g["baseline"] else g["short_label"]
        head = f"| {literal(name)} | {seeds} | {mean_ci(g['best_fcd'])} |"
        if g["baseline"]:
            lines.append(head + " |" + (" |" if m > 1 else "") + " | |")
            continue
        d, j = g["best_fcd_difference"], g["judged"]
        cells = [_interval(d)] + ([_interval(j["simultaneous"])] if m > 1 else [])
        plain_words = ("no difference detectable", "no test")
        verdict = j["verdict"] if j["verdict"] in plain_words else f"**{j['verdict']}**"
        if m > 1 and j.get("p_holm") is not None:
            verdict += f" (Holm p {j['p_holm']:.2g})"
        lines.append(f"{head} {' | '.join(cells)} | {verdict} | {j['rules_out']} |")
    effect = result["min_effect"]
    lines += ["", f"Smallest difference worth telling: {number(effect['fcd'])} FCD ({effect['chosen']})."]
    if result.get("plan"):
        p, pooled = result["plan"], result["pooled_sd"]
        lines[-1] += (
            f" Pooled within-arm sd {number(pooled['sd'])} (95% [{number(pooled['low'])}, "
            f"{number(pooled['high'])}], df {pooled['df']}): to tell {number(p['effect'])} 80% of the time "
            f"takes {_seeds(p['seeds_per_arm'])} seeds per arm "
            f"({_seeds(p['seeds_per_arm_high'])} at the sd's upper bound)."
        )
    return "\n".join(lines) + "\n"


def _interval(d: dict) -> str:
    if d["low"] is None:
        return number(d["difference"], True)
    return f"{number(d['difference'], True)} [{number(d['low'], True)}, {number(d['high'], True)}]"


def _seeds(n: int | None) -> str:
    return f"about {n}" if n is not None else "more than 100"


def rebuilt(path: Path) -> dict[Path, str]:
    """What the markdown file at `path` and the comparisons it shows should hold: the page with
    its tables generated again, each comparison.json judged again (at the table's
    `min-effect`), and its report.md where there is one."""
    files: dict[Path, str] = {}

    def block(match: re.Match) -> str:
        source = path.parent / f"{match['name']}_comparison.json"
        effect = match["effect"]
        if effect is not None and not valid_effect(effect):
            raise SystemExit(
                f"{path}: table {match['name']}: min-effect={effect} is no positive FCD or percentage"
            )
        result = add_verdicts(from_runs(json.loads(source.read_text())), effect)
        files[source] = json.dumps(result, indent=2) + "\n"
        report = path.parent / f"{match['name']}_report.md"
        if report.exists():
            files[report] = markdown(result, [])
        return match.group(1) + table(result) + match.group(5)

    files[path] = BLOCK.sub(block, path.read_text())
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only say which files differ from their data")
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    stale = []
    for page in args.files:
        for path, text in rebuilt(page).items():
            if text != path.read_text():
                stale.append(path)
                if not args.check:
                    path.write_text(text)
    for path in stale:
        print(f"{path}: {'differs from what its comparison.json gives' if args.check else 'rewritten'}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
