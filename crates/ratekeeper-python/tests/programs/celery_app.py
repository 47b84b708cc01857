"""A Celery app whose tasks hold global limits; run by test_celery.py as
real workers. Each task appends "start end pid" to $STAMPS."""

import os
import time

from celery import Celery

from ratekeeper.celery import LimitedTask

app = Celery("ratekeeper-test", broker=os.environ["BROKER"], backend=os.environ["BROKER"])
app.conf.worker_hijack_root_logger = False
app.conf.broker_connection_retry_on_startup = True


def stamp(start):
    with open(os.environ["STAMPS"], "a") as out:
        out.write(f"{start} {time.time()} {os.getpid()}\n")


@app.task(base=LimitedTask, limits=os.environ["LIMIT"])
def held_three_at_once(seconds):
    start = time.time()
    time.sleep(seconds)
    stamp(start)


@app.task(base=LimitedTask, rate=os.environ["RATE"])
def five_per_second():
    stamp(time.time())


@app.task(base=LimitedTask, limits=os.environ["LIMIT"])
def fails():
    raise RuntimeError("the task failed")


@app.task(base=LimitedTask, limits=os.environ["LIMIT"], bind=True, max_retries=2)
def retries(self):
    if self.request.retries < 2:
        raise self.retry(countdown=0.01)
    return self.request.retries
