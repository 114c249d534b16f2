"""The Kubernetes backend (`backend`), its manifests rendered from the worker spec (`manifests`),
how the CLI finds and talks to a cluster (`cluster`), and the port-forward through the API
server by which the CLI reaches Redis (`forward`)."""
