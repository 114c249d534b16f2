"""A small simulation that writes files: the logistic map x -> r x (1 - x), iterated from x0.

For each point it writes `trajectory.csv` (step, x) and `plots/trajectory.svg` (a line plot, SVG
written by hand: no numpy or matplotlib needed) into its own directory, prints progress, and
reports the mean and spread of the tail of the orbit on its last stdout line.
    python3 simulate.py --r 3.7 --x0 0.2 --steps 400 --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import statistics


def orbit(r: float, x0: float, steps: int) -> list[float]:
    xs = [x0]
    for _ in range(steps):
        xs.append(r * xs[-1] * (1 - xs[-1]))
    return xs


def svg(xs: list[float], title: str, width: int = 480, height: int = 200) -> str:
    points = " ".join(f"{i * width / (len(xs) - 1):.1f},{height - x * height:.1f}" for i, x in enumerate(xs))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 20}">'
        f'<text x="4" y="14" font-size="12">{title}</text>'
        f'<g transform="translate(0,20)"><polyline fill="none" stroke="steelblue" points="{points}"/></g>'
        "</svg>\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--r", type=float, required=True)
    parser.add_argument("--x0", type=float, default=0.2)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--out", default=os.environ.get("SWARMRUN_POINT_DIR", "."))
    args = parser.parse_args()
    print(f"logistic map r={args.r} x0={args.x0}: {args.steps} steps")
    xs = orbit(args.r, args.x0, args.steps)
    with open(os.path.join(args.out, "trajectory.csv"), "w") as f:
        f.write("step,x\n")
        f.writelines(f"{i},{x:.6f}\n" for i, x in enumerate(xs))
    os.makedirs(os.path.join(args.out, "plots"), exist_ok=True)
    with open(os.path.join(args.out, "plots", "trajectory.svg"), "w") as f:
        f.write(svg(xs, f"logistic map, r = {args.r}"))
    tail = xs[len(xs) // 2 :]
    print(json.dumps({"mean": round(statistics.fmean(tail), 6), "spread": round(max(tail) - min(tail), 6)}))


if __name__ == "__main__":
    main()
