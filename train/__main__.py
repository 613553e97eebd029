"""`python -m train`: the same as `mixbench train`."""

from mixbench.cli import stage_main

if __name__ == "__main__":
    stage_main("train")
