"""Models read once in the local pool's forkserver (jobs.local.PRELOAD imports this module there).

Every worker process of a local-pool job is forked from that server, so a model read here is shared
by all of them, page for page, instead of being read again by each worker of each job: dlib's
68-point landmark model is 100 MB and about a second to read. Nothing here may stop the server from
starting: a model that cannot be read is left to the worker, which then says why.
"""

import signal

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
