"""`python -m benchmarks [--quick] [--only SECTION ...]`: run, print the table, write CSV + PNG."""

from __future__ import annotations

import argparse
import compileall
import secrets
import sys
import time
from pathlib import Path

from benchmarks.harness import Row, load_average, machine, others_busy, redis_server, say
from benchmarks.report import table, write_csv, write_png

SECTIONS = ("call", "command", "submit", "results", "peers", "outputs", "swarm")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="Small runs (a few minutes in all).")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="Run only these sections.")
    parser.add_argument("--skip", nargs="+", choices=SECTIONS, default=[], help="Leave these sections out.")
    parser.add_argument("-w", "--workers", type=int, default=2, help="Local workers for every engine.")
    parser.add_argument(
        "--replicas",
        type=lambda s: [int(x) for x in s.split(",")],
        help="Replica counts of the scaling curve (default 1,2,4,8,16,32; quick 1,2,4,8).",
    )
    parser.add_argument("--scale-to", type=int, default=20, help="Replicas of the scale-latency test.")
    parser.add_argument("--base-image", default="swarmrun-base:bookworm", help="Base of the worker image.")
    parser.add_argument("--redis-image", default="swarmrun-redis:bookworm", help="Redis image of the stack.")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="Where CSV and PNG go.")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.replicas is not None and (not args.replicas or min(args.replicas) < 1):
        parser.error("--replicas takes positive counts, e.g. 1,2,4")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    sections = [s for s in (args.only or SECTIONS) if s not in args.skip]
    nonce = secrets.token_hex(4)
    # Byte code for every module, as `pip install` writes it for an installed package: a checkout
    # under PYTHONDONTWRITEBYTECODE would otherwise compile what changed on every command timed.
    compileall.compile_dir(Path(__file__).resolve().parent.parent / "swarmrun", quiet=1)
    started = time.strftime("%Y-%m-%d %H:%M")
    context = f"{machine()}; {others_busy()} at start; load {load_average():.2f}"
    say(context)
    rows: list[Row] = []
    try:
        if {"call", "command", "submit"} & set(sections):
            from benchmarks import local

            with redis_server() as server:
                if "call" in sections:
                    local.call_points(rows, server, quick=args.quick, workers=args.workers, nonce=nonce)
                if "command" in sections:
                    local.command_points(rows, server, quick=args.quick, workers=args.workers, nonce=nonce)
                if "submit" in sections:
                    local.submit_million(
                        rows,
                        server,
                        quick=args.quick,
                        nonce=nonce,
                        run_it=not args.quick,
                        workers=args.workers,
                    )
        if "results" in sections:
            from benchmarks import results

            with redis_server() as server:
                results.store_and_export(rows, server, quick=args.quick, nonce=nonce)
                results.end_to_end(rows, server, quick=args.quick, nonce=nonce)
            results.fixed_costs(rows, nonce=nonce)
            results.cost_model(rows, quick=args.quick, nonce=nonce)
        if "peers" in sections:
            from benchmarks import peers

            with redis_server() as server:
                peers.run(rows, server, quick=args.quick, workers=args.workers, nonce=nonce)
        if "outputs" in sections:
            from benchmarks import outputs

            with redis_server() as server:
                outputs.run(rows, server, quick=args.quick, workers=args.workers, nonce=nonce)
        if "swarm" in sections:
            from benchmarks import swarm

            replicas = args.replicas or ([1, 2, 4, 8] if args.quick else [1, 2, 4, 8, 16, 32])
            swarm.run(
                rows,
                quick=args.quick,
                replicas=replicas,
                scale_to=args.scale_to,
                base_image=args.base_image,
                redis_image=args.redis_image,
                nonce=nonce,
            )
    except KeyboardInterrupt:
        say("interrupted: reporting what was measured")
    finally:
        if rows:
            report(rows, args, f"{started}; {context}; {others_busy()} at end, load {load_average():.2f}")


def report(rows: list[Row], args: argparse.Namespace, context: str) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "quick" if args.quick else "full"
    csv_path, png_path = args.out / f"{stem}.csv", args.out / f"{stem}.png"
    write_csv(rows, csv_path)
    print(f"\n{context}\n", flush=True)
    print(table(rows), flush=True)
    missed = [r for r in rows if r.met is False]
    lines = [f"\ntargets: {sum(1 for r in rows if r.met)} met, {len(missed)} missed"]
    lines += [f"  MISSED {r.section} / {r.case} / {r.engine}: {r.target}" for r in missed]
    print("\n".join(lines), flush=True)
    print(f"\nCSV written to {csv_path}", flush=True)
    print(write_png(rows, png_path, context[:180]), flush=True)
    from benchmarks.results import write_cost_png

    print(write_cost_png(rows, args.out / f"{stem}-cost.png", context[:180]), flush=True)
    sys.stdout.flush()
