"""`python -m prep`: the same as `mixbench prep`."""

from mixbench.cli import stage_main

if __name__ == "__main__":
    stage_main("prep")
