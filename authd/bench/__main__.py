"""`python -m authd.bench`: the benchmark harness (see authd/bench/README.md)."""

from authd.bench.cli import bench

if __name__ == "__main__":
    bench(prog_name="python -m authd.bench")
