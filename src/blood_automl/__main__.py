"""Entry point for ``python -m blood_automl``."""

from blood_automl.cli import main

if __name__ == "__main__":
    main()
