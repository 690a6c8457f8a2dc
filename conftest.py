"""Set-up shared by tests/ and bench/ (pytest loads this file first): FASTNN_BACKEND
does not steer the suite.

The backend-neutral tests run on every backend that can run here (the ``backend`` and
``target`` fixtures), and the others expect the default backend, as a fresh process
gets it. So a FASTNN_BACKEND exported in the shell (say =cupy on a GPU machine) is set
aside for the run, before fastnn is imported, in this process and in those the tests
start; the report header says so. Tests that need it set it themselves.
"""

import os

SET_ASIDE = os.environ.pop("FASTNN_BACKEND", None)


def pytest_report_header(config):
    if SET_ASIDE is not None:
        return (f"FASTNN_BACKEND={SET_ASIDE!r} is set aside for the test run: backend-neutral "
                f"tests run on every backend that can run here, the others on the default")
    return None
