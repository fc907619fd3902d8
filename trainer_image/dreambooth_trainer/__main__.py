"""`python -m dreambooth_trainer train`: the same as the `train` console script, without Docker."""

from .entrypoint import console_main

if __name__ == "__main__":
    console_main()
