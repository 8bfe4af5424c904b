"""How an execution's threads run: free-running threads or processes
(:mod:`.free`, :mod:`.workers`) or one at a time under a scheduler
(:mod:`.controlled`).

Layer 5. An engine never decides what a thread does: the program, the
writer loop and the harvester come from :mod:`concurrent_dirty.harness`.

May import: errors, ``_core``, ``model``, ``dirtylog``, ``harness``,
``schedulers``.
"""
