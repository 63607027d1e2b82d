"""How long a test waits for a child process, a prompt or a file: a bound on a hang, never on speed.

The suite runs on 2-core machines beside other CPU-heavy jobs, where a step that takes 10 s idle
can take minutes; a test that waits less than this for something that is merely slow fails for the
machine, not for the code. One number, so that no test quietly measures speed again.
"""

HANG_S = 1200
