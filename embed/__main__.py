"""`python -m embed`: the same as `mixbench embed`."""

from mixbench.cli import stage_main

if __name__ == "__main__":
    stage_main("embed")
