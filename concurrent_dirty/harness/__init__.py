"""One execution, whatever the engine: the scenario, the program each
writer runs, fresh VM state, the writer and harvester loops, the oracles,
and the plain data that describes a run (results, replay tokens, traces).

Layer 4. Engines decide how the threads of an execution run; what they do
is defined here, once.

May import: errors, ``_core``, ``model``, ``dirtylog``.
"""
