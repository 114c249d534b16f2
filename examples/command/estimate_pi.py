"""Estimate pi by Monte Carlo: the fraction of random points of the unit square inside the quarter disc.

A command task reports its value on the LAST line of stdout, as a JSON object; anything printed
before it (progress, logs) is ignored.

    python3 estimate_pi.py --samples 100000 --seed 1
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time


def estimate(samples: int, seed: int) -> float:
    """4 x the fraction of `samples` uniform points in [0, 1)^2 with x^2 + y^2 < 1."""
    rng = random.Random(seed)
    inside = sum(1 for _ in range(samples) if rng.random() ** 2 + rng.random() ** 2 < 1.0)
    return 4.0 * inside / samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, required=True, help="number of random points")
    parser.add_argument("--seed", type=int, required=True, help="seed of the random generator")
    args = parser.parse_args()
    if args.samples < 1:
        parser.error("--samples must be >= 1")
    start = time.perf_counter()
    print(f"drawing {args.samples} points with seed {args.seed}", flush=True)
    pi = estimate(args.samples, args.seed)
    result = {"pi": pi, "abs_error": abs(pi - math.pi), "seconds": round(time.perf_counter() - start, 4)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
