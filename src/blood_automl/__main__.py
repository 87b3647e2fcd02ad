"""Entry point for ``python -m blood_automl``."""

if __name__ == "__main__":
    from blood_automl.signals import exit_on_stop

    # Importing the CLI takes a moment (more on a first run, while Python compiles it): a
    # stop in that moment is one line, not a silent death or a traceback. The command's own
    # handlers (or Python's defaults) take over once it is imported.
    with exit_on_stop("stopped while blood-automl was starting; nothing was done"):
        from blood_automl.cli import main
    main()
