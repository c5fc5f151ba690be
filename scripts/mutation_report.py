"""Kill rate per module from the last ``mutmut run`` (what ``make mutate`` prints at the end).

mutmut reports mutants one by one; what a reviewer needs is the rate per critical module and the
survivors to look at. Mutants listed in ``scripts/mutation_equivalents.txt`` (``name  # reason``) are
equivalent (no behaviour change) and left out of the rate, with their reason printed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from collections import Counter, defaultdict
from pathlib import Path

EQUIVALENTS = Path(__file__).with_name("mutation_equivalents.txt")
KILLED = {"killed", "timeout", "segfault"}
PENDING = {"not checked", "skipped"}  # not run yet (an interrupted run): left out of the rate


def read_results(mutmut: str) -> dict[str, str]:
    """Mutant name -> status, from ``mutmut results --all true``."""
    out = subprocess.run([mutmut, "results", "--all", "true"], capture_output=True, text=True, check=True)
    results = {}
    for line in out.stdout.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            results[name] = status.strip()
    return results


def read_equivalents(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    found = {}
    for line in path.read_text().splitlines():
        name, _, reason = line.partition("#")
        if name.strip():
            found[name.strip()] = reason.strip() or "no reason given"
    return found


def mutant_diff(mutmut: str, name: str) -> str:
    """The changed lines of one mutant (``mutmut show`` without the file headers)."""
    out = subprocess.run([mutmut, "show", name], capture_output=True, text=True).stdout
    lines = [ln for ln in out.splitlines() if ln[:1] in "-+" and not ln.startswith(("---", "+++"))]
    return "\n".join(lines)


def module_of(mutant: str) -> str:
    """``sparkle_video.data.masks.x_pack_mask__mutmut_3`` -> ``sparkle_video.data.masks``."""
    head = mutant.split("__mutmut_")[0]
    parts = head.split(".")
    while parts and (parts[-1].startswith(("x_", "xǁ")) or parts[-1][:1].isupper()):
        parts.pop()
    return ".".join(parts) or head


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutmut", default=str(Path(sys.executable).with_name("mutmut")))
    parser.add_argument("--survivors", action="store_true", help="list every surviving mutant")
    parser.add_argument("--diffs", action="store_true", help="with --survivors: show each one's diff")
    parser.add_argument("--module", action="append", help="only these modules (repeatable)")
    parser.add_argument(
        "--names", action="store_true", help="print only the survivors' names (for `mutmut run NAME...`)"
    )
    args = parser.parse_args(argv)
    results = read_results(args.mutmut)
    equivalents = read_equivalents(EQUIVALENTS)
    if args.names:
        for name, status in sorted(results.items()):
            wanted = not args.module or module_of(name) in args.module
            if wanted and name not in equivalents and status not in KILLED | PENDING:
                print(name)
        return 0
    per_module: dict[str, Counter] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for name, status in sorted(results.items()):
        module = module_of(name)
        if args.module and module not in args.module:
            continue
        if name in equivalents:
            per_module[module]["equivalent"] += 1
            continue
        if status in PENDING:
            per_module[module]["pending"] += 1
            continue
        per_module[module]["killed" if status in KILLED else status] += 1
        if status not in KILLED:
            survivors[module].append(f"{name} ({status})")
    total_killed = total = 0
    print(f"{'module':45s} {'killed':>7s} {'total':>6s} {'rate':>6s}  equivalent  not run")
    for module, counts in sorted(per_module.items()):
        killed = counts["killed"]
        n = sum(v for k, v in counts.items() if k not in ("equivalent", "pending"))
        total_killed += killed
        total += n
        rate = f"{killed / n:6.1%}" if n else "     -"
        print(f"{module:45s} {killed:7d} {n:6d} {rate}  {counts['equivalent']:10d}  {counts['pending']:7d}")
    if total:
        print(f"{'all':45s} {total_killed:7d} {total:6d} {total_killed / total:6.1%}")
    if equivalents:
        print("\nexcluded as equivalent:")
        for name, reason in sorted(equivalents.items()):
            print(f"  {name}: {reason}")
    # a listed name that is no mutant any more (the code moved on) or that tests now kill is stale
    stale = sorted(n for n in equivalents if n not in results)
    killed = sorted(n for n in equivalents if results.get(n) in KILLED)
    if stale:
        print(f"\nwarning: {len(stale)} listed equivalents are no current mutant (update the list):")
        print("\n".join(f"  {n}" for n in stale))
    if killed:
        print(f"\nwarning: {len(killed)} listed equivalents are killed, so not equivalent (remove them):")
        print("\n".join(f"  {n}" for n in killed))
    if args.survivors:
        for module, names in sorted(survivors.items()):
            print(f"\nsurvivors in {module} (`mutmut show NAME` shows the diff):")
            for name in names:
                print(f"  {name}")
                if args.diffs:
                    print(textwrap.indent(mutant_diff(args.mutmut, name.rpartition(" (")[0]), "      "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
