"""Test hook run at start-up by every Python process with this folder on PYTHONPATH.

With ``BLOOD_AUTOML_FAKE_TRAINER`` set, ``blood_automl.trainer`` is replaced by
``fake_blood_trainer`` (no TensorFlow, no model, a trial in a fraction of a second), in
the CLI process and in the worker processes it spawns alike; and ``tensorflow`` by a stub
that sees no GPU, since the coordinator of a worker pool imports TensorFlow only to count
GPUs (seconds per run, irrelevant here). SIGUSR1 then prints every thread's stack to
stderr, for a test to show where a process hangs. Without it, nothing happens.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys

if os.environ.get("BLOOD_AUTOML_FAKE_TRAINER"):
    import fake_blood_trainer

    sys.modules["blood_automl.trainer"] = fake_blood_trainer
    # Importing the fake loaded the real package (for its TensorFlow-free result types):
    # ``from blood_automl import trainer`` reads the attribute, so it names the fake too.
    sys.modules["blood_automl"].trainer = fake_blood_trainer
    sys.modules["tensorflow"] = fake_blood_trainer.fake_tensorflow()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
