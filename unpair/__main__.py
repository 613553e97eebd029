"""`python -m unpair`: the same as `mixbench unpair`."""

from mixbench.cli import stage_main

if __name__ == "__main__":
    stage_main("unpair")
