"""Campaigns over many executions: the runner that drives a scheduler
within a budget, the Hypothesis strategy, preemption minimisation, replay
and the bug zoo.

Layer 6. May import every layer below it (errors, ``_core``, ``model``,
``dirtylog``, ``mutants``, ``harness``, ``schedulers``, ``engines``); never
``cli``.
"""
