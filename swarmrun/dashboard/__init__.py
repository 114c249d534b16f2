"""`swarmrun dashboard`: a web UI over a sweep queue (Starlette app, Plotly charts, served offline)."""
