"""Models read once in the local pool's forkserver (jobs.local.PRELOAD imports this module there).

Every worker process of a local-pool job is forked from that server, so a model read here is shared
by all of them, page for page, instead of being read again by each worker of each job: dlib's
68-point landmark model is 100 MB and about a second to read. Nothing here may stop the server from
starting: a model that cannot be read is left to the worker, which then says why.
"""

import multiprocessing.util
import os
import signal
import sys
import traceback


def _quiet_when_the_job_is_gone(kind, value, tb, _default=sys.excepthook):
    """The server's hook for a worker that failed to start. A worker forked just as its job stopped
    (Ctrl-C or SIGTERM as the pool starts) finds the pool's semaphores already removed, and its
    FileNotFoundError (`SemLock._rebuild` in `synchronize.__setstate__`) printed a traceback under the
    job's "interrupted" line: nothing is lost, the job has said it stopped. Anything else is printed."""
    last = traceback.extract_tb(tb)[-1:]
    if kind is FileNotFoundError and last and last[0].name == "__setstate__" \
            and last[0].filename.endswith(os.path.join("multiprocessing", "synchronize.py")):
        return
    _default(kind, value, tb)


sys.excepthook = _quiet_when_the_job_is_gone

# The server ends with its job (its end of the job's pipe closes). A SIGTERM sent to the job's process
# group (`timeout`, systemd) ended it first, and the pool read each worker whose exit status the server
# would have passed on as dead: a broken pool, the running batches lost. Every process forked from it
# gets the default back as it starts (multiprocessing runs its after-fork hooks in each child before
# anything else): one process has one forkserver, which other code's pools use too; mfr's workers then
# choose their own (jobs.local).
signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _AfterFork:
    """(register_after_fork keeps a weak reference to an object that lives as long as the server)"""


_after_fork = _AfterFork()
multiprocessing.util.register_after_fork(_after_fork, lambda _: signal.signal(signal.SIGTERM, signal.SIG_DFL))

# Ctrl-C while the server reads the model reached it too, and printed its KeyboardInterrupt traceback
# under the job's "interrupted" line: the job stops the server itself. The handler is given back after,
# and the server's workers get it from there, as before.
_interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
try:
    from maskgen.landmarks import load_shape_predictor, model_path

    load_shape_predictor(model_path())
except Exception:  # noqa: BLE001 - reported by the worker that needs it, in words
    pass
finally:
    signal.signal(signal.SIGINT, _interrupt)
