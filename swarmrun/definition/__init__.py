"""The sweep definition: axes (`axes`), the sweep model and its id (`sweep`), sweep files and
`-p` overrides (`sweepfile`), and chunk planning (`chunk`). Pure: no I/O beyond reading the file."""
