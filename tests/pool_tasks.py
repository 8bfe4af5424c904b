"""Tiny tasks for search.pool's tests (importable by the job processes)."""

import time


def emit_then_wait(ctx, seconds=0.0):
    ctx.emit("hello", ctx.index)
    end = time.monotonic() + seconds
    while time.monotonic() < end and not ctx.stopped():
        time.sleep(0.01)
    return ctx.index
