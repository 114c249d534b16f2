"""A damped, driven harmonic oscillator, integrated with RK4 in pure Python.

    x'' + 2 gamma x' + omega0**2 x = force * cos(omega t)

`simulate` lets the transient decay, then measures the steady state over whole drive periods:
its amplitude and phase against the drive (a lock-in projection) and its mean energy. The
theoretical steady-state amplitude is returned too, so a result can be checked at a glance.
"""

from __future__ import annotations

import math


def simulate(
    gamma: float,
    omega: float,
    omega0: float = 1.0,
    force: float = 1.0,
    steps_per_period: int = 64,
    settle: float = 7.0,
) -> dict[str, float]:
    """Steady-state response to a drive at angular frequency `omega` with damping rate `gamma`."""
    if gamma <= 0 or omega <= 0 or omega0 <= 0:
        raise ValueError("gamma, omega and omega0 must be > 0")
    period = 2 * math.pi / omega
    dt = min(period, 2 * math.pi / omega0) / steps_per_period
    settle_steps = math.ceil(settle / gamma / dt)  # transients decay like exp(-gamma t)
    periods = max(1, math.ceil(20.0 / period))  # measure over at least 20 time units
    measure_steps = round(periods * period / dt)
    dt = periods * period / measure_steps  # a whole number of periods, exactly

    def accel(t: float, x: float, v: float) -> float:
        return force * math.cos(omega * t) - 2 * gamma * v - omega0 * omega0 * x

    t, x, v = 0.0, 0.0, 0.0
    in_phase = quadrature = energy = 0.0
    for step in range(settle_steps + measure_steps):
        if step >= settle_steps:
            in_phase += x * math.cos(omega * t)
            quadrature += x * math.sin(omega * t)
            energy += 0.5 * v * v + 0.5 * omega0 * omega0 * x * x
        k1x, k1v = v, accel(t, x, v)
        k2x, k2v = v + 0.5 * dt * k1v, accel(t + 0.5 * dt, x + 0.5 * dt * k1x, v + 0.5 * dt * k1v)
        k3x, k3v = v + 0.5 * dt * k2v, accel(t + 0.5 * dt, x + 0.5 * dt * k2x, v + 0.5 * dt * k2v)
        k4x, k4v = v + dt * k3v, accel(t + dt, x + dt * k3x, v + dt * k3v)
        x += dt / 6 * (k1x + 2 * k2x + 2 * k3x + k4x)
        v += dt / 6 * (k1v + 2 * k2v + 2 * k3v + k4v)
        t += dt
    a, b = 2 * in_phase / measure_steps, 2 * quadrature / measure_steps
    theory = force / math.hypot(omega0 * omega0 - omega * omega, 2 * gamma * omega)
    return {
        "amplitude": math.hypot(a, b),
        "phase": math.atan2(b, a),  # the response lags the drive by this angle, in [0, pi]
        "energy": energy / measure_steps,
        "amplitude_theory": theory,
    }


if __name__ == "__main__":
    print(simulate(gamma=0.1, omega=1.0))
