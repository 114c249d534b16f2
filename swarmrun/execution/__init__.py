"""Execution: running a point (`task`), the worker (`worker`), the Redis/RQ layer (`queue`),
result records and exports (`results`), progress text (`progress`), the manager's watch loop
(`watch`) and the autoscaler (`autoscale`)."""
