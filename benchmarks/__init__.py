"""Speed and quality benchmarks; they import enliven, never the reverse."""
