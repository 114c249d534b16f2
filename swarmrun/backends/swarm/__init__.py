"""The Docker Swarm backend (`backend`) and its Docker plumbing: the engine adapter (`engine`),
the worker image (`image`: its build; `wheelhouse`: the wheels it installs offline; `interpreter`:
the base image's Python they are chosen for), getting images onto nodes (`distribute`) and the
stack definition that `up` and stacks/swarmrun.yml both come from (`stack`)."""
