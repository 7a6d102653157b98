"""The local driver: tasks as supervised processes on this machine, limited by cgroups."""
