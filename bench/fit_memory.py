"""Where a trial's memory stays behind: RSS growth per repetition of one step of training.

Each mode repeats 8 times in this process, with ``trainer.release()`` (clear_session and
garbage collection) after each: ``build`` (build the model only), ``predict`` (build, then
predict 144 images), ``fit`` (build, compile, fit 8 batches in graph mode, as a trial does),
``fit-eager`` (the same with ``run_eagerly=True``). Prints RSS after each repetition and the
growth per repetition over the last four. MobileNet-0.25 from scratch, random 96x96 images.

    python bench/fit_memory.py                 # every mode, each in its own process
    python bench/fit_memory.py --mode fit
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from blood_automl.search.trial_worker import rss_mib

MODES = ("build", "predict", "fit", "fit-eager")


def repeat(mode: str, times: int = 8) -> list[float]:
    """RSS after each of ``times`` repetitions of ``mode``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    from blood_automl import trainer
    from blood_automl.spaces import TrialConfig
    from blood_automl.trainer.fit import make_dataset

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(400, 96, 96, 3), dtype=np.uint8)
    y = np.arange(400) % 8
    config = TrialConfig(backbone="MobileNet-0.25", dense_units=(64,), batch_size=32)
    out = []
    for i in range(times):
        model, _ = trainer.build_model(config, 8, weights="none")
        if mode.startswith("fit"):
            train = make_dataset(x[:256], y[:256], 8, batch_size=32, training=True, seed=i)
            model.compile(
                optimizer=keras.optimizers.Adam(1e-3),
                loss="categorical_crossentropy",
                run_eagerly=mode == "fit-eager",
            )
            model.fit(train, epochs=1, steps_per_epoch=8, verbose=0)
        if mode == "predict":
            trainer.predict(model, x[256:])
        del model
        trainer.release()
        out.append(rss_mib())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=MODES)
    args = parser.parse_args(argv)
    if args.mode is None:
        for mode in MODES:
            subprocess.run([sys.executable, __file__, "--mode", mode], check=True)
        return 0
    rss = repeat(args.mode)
    growth = (rss[-1] - rss[-5]) / 4
    shown = " ".join(f"{r:.0f}" for r in rss)
    print(f"{args.mode:<10} RSS MiB: {shown}; growth per repetition: {growth:+.1f} MiB", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
