"""The Celery app of the redis_pool workloads (the peer of multiproc-redis):
broker and result backend on the Redis server the harness started, default
settings otherwise. Configured by the environment: MP_CELERY_URL (the
server) and MP_CELERY_QUEUE (the queue of this row's worker)."""

import os
import time

from celery import Celery

app = Celery("mp_bench", broker=os.environ["MP_CELERY_URL"], backend=os.environ["MP_CELERY_URL"])
app.conf.update(
    task_default_queue=os.environ["MP_CELERY_QUEUE"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task
def tiny(x):
    """The tiny task: x + 1."""
    return x + 1


@app.task
def burn(x, cpu_us):
    """The CPU-bound task: spins until this thread has used cpu_us
    microseconds of CPU time (the same work, in time, as the Rust task)."""
    end = time.thread_time() + cpu_us / 1e6
    while time.thread_time() < end:
        pass
    return x
