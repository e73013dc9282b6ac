"""``[core] hostname_callable`` for the production-topology test: two workers on one host, told apart.

Airflow records each task try's host with this callable; the test gives every process it starts
its own name (``TIERLINE_TEST_WORKER_NAME``) so that it can tell which worker ran which try.
"""

import os
import socket


def name() -> str:
    return os.environ.get("TIERLINE_TEST_WORKER_NAME") or socket.getfqdn()
