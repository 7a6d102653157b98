"""Pure domain model: resources, tenancy, workloads and their state machines. No I/O."""
