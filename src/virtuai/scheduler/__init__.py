"""Pure scheduler: a snapshot in, admission and placement decisions out. No I/O.

Shared by the live control plane and the simulator.
"""
