"""`python -m bench`: the benchmark harness (see bench/README.md)."""

from bench.cli import bench

if __name__ == "__main__":
    bench(prog_name="python -m bench")
