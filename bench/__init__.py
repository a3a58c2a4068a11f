"""estore-ops performance benchmarks: `python -m bench` (or `make bench`).

Every case runs the real command line (`.venv/bin/estore-ops`) as a fresh process and compares
it with a baseline measured in the same run (DuckDB doing the same work directly). Inputs are
made by the project's own generator (fixed seed), so two runs measure the same bytes.
See BENCHMARKS.md for the latest results and `python -m bench --help` for the options.
"""
