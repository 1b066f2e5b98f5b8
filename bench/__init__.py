"""NetBee benchmarks (issue 8); run them with bench/run_all.sh."""
