"""The sweep definition: axes (`axes`), the sweep model and its id (`sweep`), sweep files and
`-p` overrides (`sweepfile`), the spec's sections (`sections`) and the value checks whose errors
name the key (`checks`), and chunk planning (`chunk`). Pure: no I/O beyond reading the files."""
