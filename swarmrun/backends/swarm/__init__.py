"""The Docker Swarm backend (`backend`) and its Docker plumbing: the engine adapter (`engine`),
the worker image (`image`), getting images onto nodes (`distribute`) and the stack definition
that `up` and stacks/swarmrun.yml both come from (`stack`)."""
